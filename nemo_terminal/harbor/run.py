"""Run `harbor run` on local tasks as a subprocess of Harbor's own venv, offline.

Harbor's Python (>= 3.12) never shares a process with ours; we build its command line and read
the job directory it writes (JOBS_DIR/JOB_NAME, see nemo_terminal.harbor.jobs). The environment
passed to it keeps Harbor and LiteLLM from reaching the network for telemetry and price tables,
which costs seconds of retries on an offline machine and would leak nothing useful anyway.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nemo_terminal.harbor.install import PathLike, ensure_harbor

OFFLINE_ENV = {
    "HARBOR_TELEMETRY": "0",  # no PostHog events
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # LiteLLM's bundled price map, no download attempts
}


class HarborRunError(subprocess.CalledProcessError):
    """`harbor run` failed; the message carries the end of its output (Harbor prints tracebacks there)."""

    def __str__(self) -> str:
        tail = "\n".join(str(x or "")[-4000:] for x in (self.stdout, self.stderr))
        return f"{super().__str__()}\n{tail}"


def harbor_env(extra: Mapping[str, str] | None = None, pythonpath: Sequence[PathLike] = ()) -> dict[str, str]:
    """os.environ plus OFFLINE_ENV and `extra`; `pythonpath` is prepended (for custom agent/env classes)."""
    env = dict(os.environ, **OFFLINE_ENV)
    env.pop("PYTHONPATH", None)  # ours (3.10+, torch...) must not leak into Harbor's 3.12 process
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env.update(extra or {})
    return env


def _kwarg(key: str, value: Any) -> str:
    """key=value as Harbor parses it: strings verbatim, anything else as JSON."""
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def harbor_command(
    harbor: PathLike,
    path: PathLike,
    jobs_dir: PathLike,
    job_name: str,
    agent: str = "oracle",
    *,
    environment: str = "docker",
    model: str | None = None,
    agent_kwargs: Mapping[str, Any] | None = None,
    n_concurrent: int = 1,
    n_attempts: int = 1,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The `harbor run` argv for a local task (or dataset directory of tasks) at `path`.

    `agent` and `environment` take Harbor's names (oracle, nop, terminus-2; docker, podman) or an
    import path `module:Class`. `--yes` answers Harbor's prompts, `--quiet` drops its live display.
    """
    cmd = [
        str(harbor), "run", "--yes", "--quiet",
        "--path", str(path), "--jobs-dir", str(jobs_dir), "--job-name", job_name,
        "--agent", agent, "--env", environment,
        "--n-concurrent", str(n_concurrent), "--n-attempts", str(n_attempts),
    ]
    if model:
        cmd += ["--model", model]
    for key, value in (agent_kwargs or {}).items():
        cmd += ["--ak", _kwarg(key, value)]
    return cmd + list(extra_args)


def run_harbor(
    path: PathLike,
    jobs_dir: PathLike,
    job_name: str | None = None,
    agent: str = "oracle",
    *,
    harbor: PathLike | None = None,
    env: Mapping[str, str] | None = None,
    pythonpath: Sequence[PathLike] = (),
    timeout: float | None = None,
    **command_kwargs: Any,
) -> Path:
    """Run Harbor on `path` and return the job directory (jobs_dir/job_name).

    `harbor`: an explicit executable (else `install.ensure_harbor`). `command_kwargs` go to
    `harbor_command` (environment, model, agent_kwargs, n_concurrent, n_attempts, extra_args).
    Raises HarborRunError (a CalledProcessError) carrying Harbor's output when it exits non-zero or
    writes no job result; a trial whose agent fails still yields a job (reward 0 or an exception).
    """
    exe = ensure_harbor(harbor)
    job_name = job_name or time.strftime("%Y-%m-%d__%H-%M-%S")
    jobs_dir = Path(jobs_dir)
    jobs_dir.mkdir(parents=True, exist_ok=True)
    cmd = harbor_command(exe, Path(path).resolve(), jobs_dir.resolve(), job_name, agent, **command_kwargs)
    proc = subprocess.run(cmd, env=harbor_env(env, pythonpath), cwd=jobs_dir, capture_output=True, text=True,
                          timeout=timeout)
    job_dir = jobs_dir / job_name
    if proc.returncode != 0 or not (job_dir / "result.json").is_file():
        raise HarborRunError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return job_dir
