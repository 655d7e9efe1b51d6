"""`eval run`: serve the export with vLLM, run Harbor's Terminal-Bench job against it, report.

The server lives exactly as long as the Harbor job (`VllmServer` stops it on every exit path);
then the job directory is read into the paper's table (evaluation/report.py).
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import time
from pathlib import Path

from nemo_terminal.errors import UserError
from nemo_terminal.evaluation import plan
from nemo_terminal.evaluation.report import build_report, format_report, write_outputs
from nemo_terminal.evaluation.server import VllmServer
from nemo_terminal.harbor.install import find_harbor
from nemo_terminal.harbor.run import harbor_env

log = logging.getLogger(__name__)


def _harbor_executable(given: str) -> str:
    """An explicit --harbor, else the Harbor venv nemo_terminal.harbor.install finds."""
    if given != "harbor":
        return given
    found = find_harbor()
    return str(found) if found else given


def commands(settings: plan.EvalSettings) -> tuple[plan.EvalSettings, str, list[str], list[str]]:
    """(resolved settings, job name, vllm argv, harbor argv)."""
    s = plan.resolve(settings)
    s.harbor = _harbor_executable(s.harbor)
    job_name = s.job_name or f"{s.served_name}__{time.strftime('%Y-%m-%d__%H-%M-%S')}"
    return s, job_name, plan.vllm_command(s), plan.harbor_command(s, job_name)


def dry_run_text(settings: plan.EvalSettings) -> str:
    """Every command `eval run` would execute, with its final flags."""
    s, job_name, vllm, harbor = commands(settings)
    return "\n".join([
        f"# thinking={s.thinking or 'unknown (Qwen3 template)'}: interleaved_thinking "
        f"{'on' if s.thinking == 'keep' else 'off'}; summarisation {'on' if s.summarize else 'off'}",
        shlex.join(vllm),
        f"# wait for http://{s.host}:{s.port}/health (up to {s.health_timeout_s:.0f} s)",
        shlex.join(harbor),
        "# stop vllm serve (SIGTERM to its process group), then:",
        shlex.join(["nemo-terminal", "eval", "report", str(Path(s.jobs_dir) / job_name)]),
    ])


def run_eval(settings: plan.EvalSettings) -> int:
    """Run the evaluation; return Harbor's exit code. The report goes to stdout and the job directory."""
    s, job_name, vllm, harbor = commands(settings)
    job_dir = Path(s.jobs_dir) / job_name
    job_dir.parent.mkdir(parents=True, exist_ok=True)
    log.info("thinking=%s, %s attempts x %s concurrent, job %s", s.thinking, s.n_attempts, s.n_concurrent, job_dir)
    with VllmServer(vllm, f"http://{s.host}:{s.port}/health", Path(s.jobs_dir) / f"{job_name}.vllm.log",
                    s.health_timeout_s):
        log.info("running %s", shlex.join(harbor))
        try:
            rc = subprocess.run(harbor, env=harbor_env()).returncode
        except OSError as err:
            raise UserError(f"cannot run Harbor {harbor[0]!r} ({err.strerror}): run tools/ci_system_deps.sh, "
                            "or pass --harbor PATH/TO/harbor (Python >= 3.12 venv)") from None
    if rc != 0:
        log.error("harbor exited with code %d", rc)
    if job_dir.is_dir():
        try:
            rep = build_report(job_dir)
        except UserError as err:
            log.error("no report: %s", err)
            return rc or 1
        print(format_report(rep))
        paths = write_outputs(rep, job_dir)
        log.info("wrote %s and %s", *paths)
    return rc
