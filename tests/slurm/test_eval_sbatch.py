"""slurm/eval.sbatch run by bash as Slurm would run the batch step, with stand-in `vllm` and `harbor`
executables (tests/fixtures/standins; vLLM needs a GPU): its --dry-run output, a whole run, and
SIGTERM (scancel, or the time limit via --signal) reaching the batch shell mid-job."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nemo_terminal.models.chat_template import chat_template
from nemo_terminal.testing import process_gone

REPO = Path(__file__).resolve().parents[2]
STANDINS = REPO / "tests" / "fixtures" / "standins"
JOB = REPO / "tests" / "fixtures" / "harbor_eval_job" / "tb2-qwen3-8b"


def _export(root: Path, thinking: str) -> Path:
    d = root / "my exports" / "qwen3-14b-terminal"  # a space: every variable must be quoted
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"num_hidden_layers": 40, "hidden_size": 5120}))
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": chat_template(thinking)}))
    return d


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env.update(PROJECT_DIR=str(REPO), PYTHON=sys.executable, CONTAINER_IMAGE="", JOBS_DIR=str(tmp_path / "jobs"),
               STANDIN_DIR=str(tmp_path), STANDIN_JOB=str(JOB), VLLM=str(STANDINS / "vllm"),
               HARBOR=str(STANDINS / "harbor"), EVAL_PORT=str(port), **extra)
    return env


def _sbatch(env: dict[str, str], *args: str, **kw) -> subprocess.Popen:
    cmd = ["bash", str(REPO / "slurm" / "eval.sbatch"), "--port", env["EVAL_PORT"], "--health-timeout", "60", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_dry_run_prints_the_final_commands(tmp_path):
    export = _export(tmp_path, "strip_history")
    proc = _sbatch(_env(tmp_path, HF_DIR=str(export), DRY_RUN="1", ATTEMPTS="2", CONCURRENCY="3"), "--summarize")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    (vllm,) = [shlex.split(ln) for ln in out.splitlines() if ln.startswith(str(STANDINS / "vllm"))]
    (harbor,) = [shlex.split(ln) for ln in out.splitlines() if ln.startswith(str(STANDINS / "harbor"))]
    assert vllm[1:3] == ["serve", str(export)] and vllm[vllm.index("--tensor-parallel-size") + 1] == "2"
    assert vllm[vllm.index("--max-model-len") + 1] == "40960" and "qwen3" in vllm
    assert harbor[harbor.index("--n-attempts") + 1] == "2" and harbor[harbor.index("--n-concurrent") + 1] == "3"
    assert "interleaved_thinking=false" in harbor and "enable_summarize=true" in harbor
    assert not (tmp_path / "vllm.json").exists()  # nothing ran



def test_whole_run_serves_harbor_reports_and_stops_the_server(tmp_path):
    proc = _sbatch(_env(tmp_path, HF_DIR=str(_export(tmp_path, "keep"))), "--job-name", "tb2")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "accuracy 33.3% ± 19.2" in out
    assert "interleaved_thinking=true" in json.loads((tmp_path / "harbor.json").read_text())
    assert process_gone(json.loads((tmp_path / "vllm.json").read_text())["pid"])
    assert (tmp_path / "jobs" / "tb2" / "accuracy_by_category.png").is_file()


def test_sigterm_to_the_batch_shell_stops_the_server(tmp_path):
    proc = _sbatch(_env(tmp_path, HF_DIR=str(_export(tmp_path, "keep")), STANDIN_HARBOR_WAIT="1"))
    for _ in range(600):
        if (tmp_path / "harbor.json").exists():
            break
        time.sleep(0.1)
    else:
        pytest.fail(proc.communicate(timeout=5)[0])
    proc.send_signal(signal.SIGTERM)  # to the batch shell only, as `--signal=B:TERM` sends it
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert process_gone(json.loads((tmp_path / "vllm.json").read_text())["pid"])
