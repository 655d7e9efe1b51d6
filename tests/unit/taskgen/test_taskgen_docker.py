"""The paper's loop on one generated task, for real: domain image built offline, Harbor in Docker.

A generated task (the replayed access-log task) gets a hand-written solution/solve.sh. Harbor's
oracle agent (runs it) must earn reward 1 and the nop agent (does nothing) reward 0, judged by the
task's own weighted tests inside the container; Terminus-2 against a scripted endpoint solves it
too, and its job directory goes through `collect` and `prepare`. Needs what
tools/ci_system_deps.sh installs (Docker, compose v2, local/debian-tools:bookworm, Harbor's venv);
skipped without it, failed in CI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from replay_server import ReplayServer
from taskgen_cases import generate_args

from nemo_terminal.cli import main
from nemo_terminal.harbor.install import HARBOR_VERSION, find_harbor
from nemo_terminal.harbor.run import run_harbor
from nemo_terminal.testing import ScriptedChatServer, find_tool, require

pytestmark = [pytest.mark.slow, pytest.mark.system]
BASE_IMAGE = "local/debian-tools:bookworm"
SOLVE = r"""#!/bin/bash
# Hand-written solution of the replayed access-log task (seed-data-processing-000000).
set -euo pipefail
mkdir -p /app/report
awk -v counts=/tmp/counts -v bad=/app/report/malformed.txt '
  $1 ~ /^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/ && $4 ~ /^\[/ && $0 ~ /"[A-Z]+ [^"]*"/ && $9 ~ /^[0-9]+$/ { n[$1]++; next }
  { b++ }
  END { for (ip in n) print ip "," n[ip] > counts; print b + 0 > bad }' /app/logs/access.log
{ echo "ip,requests"; LC_ALL=C sort -t, -k2,2nr -k1,1 /tmp/counts | head -n 10; } > /app/report/top_clients.csv
"""
MODEL_INFO = {"max_input_tokens": 32768, "max_output_tokens": 4096, "input_cost_per_token": 0.0,
              "output_cost_per_token": 0.0}


def _missing() -> str | None:
    docker = find_tool("docker")
    if docker is None:
        return "docker is not installed"
    for missing, cmd in {"the Docker daemon is not running": [docker, "info"],
                         "the docker compose v2 plugin is missing": [docker, "compose", "version"],
                         f"the base image {BASE_IMAGE} is not built": [docker, "image", "inspect", BASE_IMAGE]}.items():
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            return missing
    return None if find_harbor() else f"Harbor {HARBOR_VERSION} (its venv) is not installed"


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    require(_missing())
    root = tmp_path_factory.mktemp("loop")
    with ReplayServer() as s:
        assert main(generate_args(s.url, root / "gen")) == 0
    assert main(["taskgen", "envs", "--out", str(root / "envs"), "--build", "--offline", "--base-image", BASE_IMAGE,
                 "--domains", "data-processing"]) == 0
    task = root / "tasks" / "access-log"
    shutil.copytree(root / "gen" / "tasks" / "seed-data-processing-000000", task)
    (task / "solution").mkdir()
    (task / "solution" / "solve.sh").write_text(SOLVE)
    (task / "solution" / "solve.sh").chmod(0o755)
    reply = json.dumps({"analysis": "The log is at /app/logs/access.log.", "plan": "Run the counting script.",
                        "commands": [{"keystrokes": f"cat > /tmp/solve.sh <<'EOF'\n{SOLVE}EOF\n", "duration": 0.5},
                                     {"keystrokes": "bash /tmp/solve.sh && cat /app/report/top_clients.csv\n",
                                      "duration": 1.0}],
                        "task_complete": True})
    with ScriptedChatServer([reply]) as llm, ThreadPoolExecutor(3) as pool:
        runs = {
            "oracle": pool.submit(run_harbor, task, root / "jobs", "oracle", "oracle", timeout=900),
            "nop": pool.submit(run_harbor, task, root / "jobs", "nop", "nop", timeout=900),
            "terminus-2": pool.submit(
                run_harbor, task, root / "jobs", "terminus-2", "terminus-2", timeout=900,
                model=f"hosted_vllm/{llm.model}",
                agent_kwargs={"api_base": llm.url, "model_info": MODEL_INFO,
                              "trajectory_config": {"raw_content": True}}),
        }
        return root, {name: f.result() for name, f in runs.items()}


def _reward(job: Path) -> float:
    trial = next(p for p in job.iterdir() if p.is_dir())
    result = json.loads((trial / "result.json").read_text())
    assert result["exception_info"] is None, result["exception_info"]
    return result["verifier_result"]["rewards"]["reward"]


@pytest.mark.parametrize("agent,reward", [("oracle", 1.0), ("nop", 0.0), ("terminus-2", 1.0)])
def test_generated_task_rewards(jobs, agent, reward):
    assert _reward(jobs[1][agent]) == reward


def test_loop_ends_in_prepared_data(jobs, tokenizer_dir):
    root, job_dirs = jobs
    out = root / "trajectories.jsonl"
    assert main(["taskgen", "collect", str(root / "jobs"), "--out", str(out)]) == 0
    [record] = [json.loads(x) for x in out.read_text().splitlines()]  # oracle and nop leave no trajectory
    assert record["run_id"] == "terminus-2" and record["reward"] == 1.0
    assert main(["prepare", "--input", str(out), "--tokenizer", str(tokenizer_dir), "--out", str(root / "data"),
                 "--seq-length", "8192"]) == 0
    assert json.loads((root / "data" / "report.json").read_text())["records_kept"] == 1
