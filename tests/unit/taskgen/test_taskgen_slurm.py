"""slurm/taskgen.sbatch without a cluster: required variables, and the commands of a dry run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "slurm" / "taskgen.sbatch"


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in ("OUT_DIR", "TEACHER_MODEL")}
    base.update(PROJECT_DIR=str(REPO), CONTAINER_IMAGE="none", DRY_RUN="1", **env)
    return subprocess.run(["bash", str(SCRIPT)], env=base, capture_output=True, text=True, cwd=tmp_path)


def test_required_variables_fail_before_anything_runs(tmp_path):
    proc = _run(tmp_path)
    assert proc.returncode == 2 and "OUT_DIR is not set" in proc.stderr and "+ " not in proc.stdout
    proc = _run(tmp_path, OUT_DIR=str(tmp_path / "o"))
    assert proc.returncode == 2 and "TEACHER_MODEL is not set" in proc.stderr
    proc = _run(tmp_path, OUT_DIR=str(tmp_path / "o"), LLM_URL="http://h:1/v1", MODE="seed")
    assert proc.returncode == 2 and "SEEDS is not set" in proc.stderr


def test_dry_run_commands(tmp_path):
    out = tmp_path / "run 1"  # a space: every variable is quoted
    proc = _run(tmp_path, OUT_DIR=str(out), TEACHER_MODEL="/models/DeepSeek-V3.2", DOMAINS="security debugging")
    assert proc.returncode == 0, proc.stderr
    commands = [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert [c.split()[0] for c in commands] == ["vllm", "python3", "srun", "harbor", "srun"]
    assert commands[0] == "vllm serve /models/DeepSeek-V3.2 --served-model-name teacher --port 8000 " \
                          "--tensor-parallel-size 8 --reasoning-parser deepseek_v3"
    commands = commands[1:]
    q = str(out).replace(" ", "\\ ")
    assert f"taskgen generate --mode skill --num 1000 --seed 0 --llm-url http://127.0.0.1:8000/v1 --model teacher " \
           f"--api-key-env OPENAI_API_KEY --concurrency 32 --out {q} --domains security debugging" in commands[1]
    assert "--agent terminus-2 --model hosted_vllm/teacher" in commands[2] and "raw_content" in commands[2]
    assert "--api-key-name" not in commands[2] and "chat_template_kwargs" in commands[2]
    assert commands[3].endswith(f"taskgen collect {q}/jobs/teacher --out {q}/trajectories.jsonl")


def test_hosted_endpoint_key_is_named_never_printed(tmp_path):
    key = "sk-sbatch-SECRET-0042"
    proc = _run(tmp_path, OUT_DIR=str(tmp_path / "o"), LLM_URL="https://api.example.com/v1", SERVED_NAME="big",
                TEACHER_KEY=key, API_KEY_ENV="TEACHER_KEY", STEPS="generate,harbor")
    assert proc.returncode == 0, proc.stderr
    assert key not in proc.stdout + proc.stderr and "vllm serve" not in proc.stdout
    assert "--api-key-env TEACHER_KEY" in proc.stdout and "--api-key-name TEACHER_KEY" in proc.stdout
