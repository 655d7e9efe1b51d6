"""slurm/train.sbatch under a real Slurm (slurmctld + slurmd on loopback), without a container.

The test configures a one-node cluster in its own temp dir (auth/none, proctrack/linuxproc,
task/none), builds the training inputs with the CLI (tiny Qwen3, import, prepare), submits the
real batch script at 2 tasks (srun launcher, gloo), and checks the checkpoints it writes. A second
test sends the batch shell the time-limit signal and checks that the job requeues itself and
resumes from run_dir/latest. A third submits slurm/eval.sbatch (no GPU: a stand-in `vllm` first
on the job's PATH, a stand-in `harbor` as HARBOR) and checks it serves, runs Harbor and stops the
server. Needs root and Debian's slurmctld/slurmd (tools/ci_system_deps.sh
installs them); skipped otherwise, and failed in CI. Slow (minutes on 2 cores): `-m "not slow"` skips it.
"""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nemo_terminal.models.chat_template import chat_template, write_chat_template
from nemo_terminal.testing import find_tool, process_gone, require

pytestmark = [pytest.mark.slow, pytest.mark.system]
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "nemo_terminal" / "resources" / "sample_trajectories.jsonl"
STANDINS = REPO / "tests" / "fixtures" / "standins"  # stand-in vllm and harbor (see their docstrings)
EVAL_JOB = REPO / "tests" / "fixtures" / "harbor_eval_job" / "tb2-qwen3-8b"


def _missing() -> str | None:
    for tool in ("slurmctld", "slurmd", "sbatch", "scontrol", "sinfo"):
        if find_tool(tool) is None:
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "slurmd must run as root to launch job steps"
    if not glob.glob("/usr/lib/*/slurm*/auth_none.so") + glob.glob("/usr/lib*/slurm*/auth_none.so"):
        return "Slurm's auth/none plugin is not installed"
    if (os.cpu_count() or 1) < 2:
        return "needs 2 CPUs for 2 tasks"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _daemon(name: str) -> str:
    return find_tool(name) or name


class Cluster:
    """A one-node Slurm on loopback; every state, spool and log file under `root`."""

    def __init__(self, root: Path):
        self.root = root
        for sub in ("state", "spool", "log"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.conf = root / "slurm.conf"
        self.conf.write_text(_slurm_conf(root, os.cpu_count() or 2))
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        for cmd in ([_daemon("slurmctld"), "-D"], [_daemon("slurmd"), "-D", "-N", "localhost"]):
            log = open(self.root / "log" / f"{Path(cmd[0]).name}.out", "w")
            self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.time() + 60
        while time.time() < deadline:
            out = self.run(["sinfo", "-h", "-o", "%t"], check=False).stdout.strip()
            if out == "idle":
                return
            time.sleep(1)
        raise RuntimeError(f"slurm did not come up; logs in {self.root / 'log'}")

    def stop(self) -> None:
        self.run(["scancel", "--user=root"], check=False)
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    def run(self, cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=kw.pop("env", self.env), capture_output=True, text=True, check=check, **kw)

    def job(self, job_id: str) -> dict[str, str]:
        out = self.run(["scontrol", "show", "job", job_id]).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait(self, job_id: str, until, timeout: float = 420) -> dict[str, str]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.job(job_id)
            if until(info):
                return info
            time.sleep(2)
        raise AssertionError(f"job {job_id} timed out in state {self.job(job_id).get('JobState')}")


def _wait_node_idle(cluster: Cluster, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cluster.run(["sinfo", "-h", "-o", "%t"], check=False).stdout.strip() == "idle":
            time.sleep(2)  # slurmd compares credential times in whole seconds with the revocation
            return
        time.sleep(1)
    raise AssertionError("the node did not return to idle after the requeue")


def _slurm_conf(root: Path, cpus: int) -> str:
    return f"""ClusterName=nemoterminaltest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ReturnToService=2
MinJobAge=3600
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require(_missing())
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    c.start()
    yield c
    c.stop()


def _cli(*args: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "nemo_terminal", *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"nemo-terminal {args[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny Qwen3 imported to Megatron and prepared trajectories, made with the CLI."""
    work = tmp_path_factory.mktemp("inputs")
    traj = SAMPLE
    if not traj.is_file():  # until the sample ships: records in the exact Terminal-Corpus format
        from nemo_terminal.data.pipeline.synthetic import write_jsonl

        traj = write_jsonl(work / "trajectories.jsonl", 24, seed=0)
    _cli("tiny-model", "--out", str(work / "hf"), "--seed", "0")
    _cli("prepare", "--input", str(traj), "--tokenizer", str(work / "hf"), "--out", str(work / "data"),
         "--seq-length", "1024")
    _cli("import", "--hf-dir", str(work / "hf"), "--out", str(work / "meg"), "--dtype", "fp32")
    return work


def _submit(cluster: Cluster, inputs: Path, run_dir: Path, *overrides: str, launcher: str = "srun") -> tuple[str, Path]:
    log = run_dir.parent / f"{run_dir.name}-%j.out"
    env = dict(cluster.env, CONTAINER_IMAGE="none", PYTHON=sys.executable, OMP_NUM_THREADS="1",
               CONFIG=str(REPO / "configs" / "tiny_cpu.yaml"), MEGATRON_DIR=str(inputs / "meg"),
               DATA_DIR=str(inputs / "data"), RUN_DIR=str(run_dir), NPROC_PER_NODE="2", LAUNCHER=launcher)
    cmd = ["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--time=20",
           f"--output={log}", str(REPO / "slurm" / "train.sbatch"), *overrides]
    job_id = cluster.run(cmd, env=env, cwd=REPO).stdout.strip().split(";")[0]
    return job_id, Path(str(log).replace("%j", job_id))


def _finished(info: dict[str, str]) -> bool:
    return info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("launcher", ["srun", "torchrun"])
def test_train_sbatch_trains_and_checkpoints(cluster, inputs, tmp_path, launcher):
    run_dir = tmp_path / "run"
    job_id, log = _submit(cluster, inputs, run_dir, "train.max_steps=4", "checkpoint.save_interval=2",
                          launcher=launcher)
    info = cluster.wait(job_id, _finished)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", text[-4000:]
    assert "dp=2" in text  # two ranks (srun tasks, or torchrun's workers) formed one gloo world
    assert "fits" in text  # the memory plan ran first
    assert (run_dir / "latest").read_text().strip() == "iter_0000004"
    assert [m["step"] for m in _metrics(run_dir)] == [1, 2, 3, 4]


def test_time_limit_signal_requeues_and_resumes(cluster, inputs, tmp_path):
    run_dir = tmp_path / "run"
    job_id, log = _submit(cluster, inputs, run_dir, "train.max_steps=8", "checkpoint.save_interval=2")
    deadline = time.time() + 300
    while not (run_dir / "latest").is_file():
        assert time.time() < deadline and not _finished(cluster.job(job_id)), log.read_text()[-4000:]
        time.sleep(1)
    # What --signal=B:USR1@600 does near the time limit, sent now.
    cluster.run(["scancel", "--batch", "--signal=USR1", job_id])
    cluster.wait(job_id, lambda i: i.get("Restarts") == "1" and i.get("JobState") == "PENDING", timeout=120)
    # Skip Slurm's requeue delay, but only once the node has cleaned up the first run: a restart
    # before that is refused by slurmd ("Job credential revoked") and the job ends FAILED.
    _wait_node_idle(cluster)
    cluster.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
    info = cluster.wait(job_id, _finished)
    text = log.read_text()  # --open-mode=append keeps both runs
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", text[-4000:]
    # The trainer saved and exited 75 (EX_TEMPFAIL); the script requeued on that code alone.
    assert "training step finished with exit code 75" in text, text[-4000:]
    assert "requeueing job" in text and "restart 1" in text
    assert re.search(r"resumed from \S+iter_\d+ at step [1-7]\b", text), text[-4000:]
    assert (run_dir / "latest").read_text().strip() == "iter_0000008"
    assert _metrics(run_dir)[-1]["step"] == 8


def _eval_export(root: Path) -> Path:
    """What `export` leaves that eval.sbatch reads: config.json (the model shape sets the TP size)
    and the chat template in tokenizer_config.json and chat_template.jinja. No weights: the
    stand-in vLLM loads nothing."""
    d = root / "qwen3_8b_terminal"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model_type": "qwen3", "num_hidden_layers": 36, "hidden_size": 4096}))
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "Qwen2Tokenizer"}))
    write_chat_template(d, chat_template("keep"))
    return d



def test_eval_sbatch_serves_runs_harbor_and_stops_the_server(cluster, tmp_path):
    """slurm/eval.sbatch as a Slurm batch job, up to and past the point where vLLM starts.

    The node has no GPU, so `vllm` on the job's PATH is a STAND-IN (tests/fixtures/standins/vllm:
    records its argv and pid, serves /health), and HARBOR points at the stand-in `harbor` (records
    its argv, copies a finished Harbor job fixture into place). The #SBATCH GPU and CPU requests
    are overridden on the sbatch command line, as the train tests override theirs.
    """
    export, bin_dir = _eval_export(tmp_path), tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("vllm", "harbor"):
        (bin_dir / name).symlink_to(STANDINS / name)
    env = {k: v for k, v in cluster.env.items() if k not in ("VLLM", "HARBOR", "NEMO_TERMINAL_HARBOR")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", CONTAINER_IMAGE="none", PYTHON=sys.executable,
               HF_DIR=str(export), JOBS_DIR=str(tmp_path / "jobs"), SERVED_NAME="tb2-model", ATTEMPTS="2",
               CONCURRENCY="1", HARBOR=str(bin_dir / "harbor"), STANDIN_DIR=str(tmp_path), STANDIN_JOB=str(EVAL_JOB))
    log = tmp_path / "eval-%j.out"
    port = str(_free_port())
    cmd = ["sbatch", "--parsable", "--gpus-per-node=0", "--cpus-per-task=1", "--time=10", f"--output={log}",
           str(REPO / "slurm" / "eval.sbatch"), "--port", port, "--health-timeout", "60", "--job-name", "tb2"]
    job_id = cluster.run(cmd, env=env, cwd=REPO).stdout.strip().split(";")[0]
    info = cluster.wait(job_id, _finished, timeout=180)
    text = Path(str(log).replace("%j", job_id)).read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", text[-4000:]
    assert f"nemo-terminal eval: job {job_id} on" in text  # the batch step, under Slurm

    served = json.loads((tmp_path / "vllm.json").read_text())
    argv = served["argv"]
    flag = dict(zip(argv, argv[1:], strict=False)).get  # the value after each flag
    assert argv[:2] == ["serve", str(export)]
    assert (flag("--max-model-len"), flag("--reasoning-parser"), flag("--served-model-name"), flag("--port"),
            flag("--tensor-parallel-size"), flag("--chat-template")) == \
        ("40960", "qwen3", "tb2-model", port, "1", str(export / "chat_template.jinja"))
    assert "vllm serve is healthy" in text, text[-4000:]

    harbor = json.loads((tmp_path / "harbor.json").read_text())
    assert harbor[0] == "run" and harbor[harbor.index("--model") + 1] == "hosted_vllm/tb2-model"
    assert harbor[harbor.index("--n-attempts") + 1] == "2" and harbor[harbor.index("--job-name") + 1] == "tb2"
    assert f"api_base=http://127.0.0.1:{port}/v1" in harbor and "interleaved_thinking=true" in harbor
    assert "accuracy 33.3% ± 19.2" in text  # the report of the job Harbor "wrote"
    assert (tmp_path / "jobs" / "tb2" / "eval_report.json").is_file()

    # Stopped by `eval run` itself (its log line), not left to Slurm's end-of-job cleanup.
    assert f"stopping vllm serve (pid {served['pid']})" in text, text[-4000:]
    assert process_gone(served["pid"])
