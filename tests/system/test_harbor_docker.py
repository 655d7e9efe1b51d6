"""Harbor 0.25 on this machine: real `harbor run`, Docker, the offline base image, a hand-written task.

The oracle agent (runs solution/solve.sh) must earn reward 1 and the nop agent (does nothing)
reward 0, judged by the task's own pytest checks inside the container. Terminus-2, the paper's
agent, drives tmux in the container against a scripted OpenAI-compatible server (a real HTTP
endpoint reached through LiteLLM's `hosted_vllm/` provider) and must solve the task too, leaving
its ATIF trajectory. Every job directory must keep the layout of the committed fixture
tests/fixtures/harbor_job/<agent>, which job-dir readers are tested against without Docker;
`python tests/system/test_harbor_docker.py` rewrites that fixture. Needs what
tools/ci_system_deps.sh installs; skipped without it (failed in CI).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from nemo_terminal.harbor.run import run_harbor
from nemo_terminal.testing import ScriptedChatServer

pytestmark = [pytest.mark.slow, pytest.mark.system]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TASK = FIXTURES / "harbor_tasks" / "hello-file"
JOB_FIXTURE = FIXTURES / "harbor_job"
GREETING = "hello from nemo_terminal"
REPLY = json.dumps({
    "analysis": "The file /app/greeting.txt does not exist yet.",
    "plan": "Write the greeting with echo, then print the file to check it.",
    "commands": [{"keystrokes": f"echo '{GREETING}' > /app/greeting.txt\n", "duration": 0.5},
                 {"keystrokes": "cat /app/greeting.txt\n", "duration": 0.5}],
    "task_complete": True,
})
# Harbor refuses a hosted_vllm model without these (context sizes, and prices for its cost report).
MODEL_INFO = {"max_input_tokens": 32768, "max_output_tokens": 4096, "input_cost_per_token": 0.0,
              "output_cost_per_token": 0.0}
# job name -> (agent, extra agent kwargs); terminus-2-raw keeps the model's replies verbatim.
JOBS: dict[str, tuple[str, dict[str, Any]]] = {
    "oracle": ("oracle", {}),
    "nop": ("nop", {}),
    "terminus-2": ("terminus-2", {}),
    "terminus-2-raw": ("terminus-2", {"trajectory_config": {"raw_content": True}, "store_all_messages": True}),
}


def run_jobs(jobs_dir: Path, harbor: Path | None = None) -> tuple[dict[str, Path], ScriptedChatServer]:
    """Every job in JOBS, side by side (each is mostly Harbor start-up and waiting on containers)."""
    with ScriptedChatServer([REPLY]) as llm, ThreadPoolExecutor(len(JOBS)) as pool:
        futures = {}
        for name, (agent, kwargs) in JOBS.items():
            model_kw: dict[str, Any] = {}
            if agent == "terminus-2":
                kwargs = {"api_base": llm.url, "model_info": MODEL_INFO, **kwargs}
                model_kw = {"model": f"hosted_vllm/{llm.model}", "agent_kwargs": kwargs}
            futures[name] = pool.submit(run_harbor, TASK, jobs_dir, name, agent, harbor=harbor, timeout=600, **model_kw)
        return {name: f.result() for name, f in futures.items()}, llm


@pytest.fixture(scope="module")
def jobs(harbor_exe, tmp_path_factory) -> tuple[dict[str, Path], ScriptedChatServer]:
    try:
        return run_jobs(tmp_path_factory.mktemp("harbor_jobs"), harbor_exe)
    except subprocess.CalledProcessError as e:
        pytest.fail(str(e))


def _trial(job: Path) -> Path:
    trials = [p for p in job.iterdir() if p.is_dir()]
    assert len(trials) == 1, trials
    return trials[0]


def _layout(job: Path) -> set[str]:
    """Relative file paths, with the random trial suffix (hello-file__AbC123) normalised."""
    trial = _trial(job).name
    return {str(p.relative_to(job)).replace(trial, "TRIAL") for p in job.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name, reward", [("oracle", 1.0), ("nop", 0.0), ("terminus-2", 1.0), ("terminus-2-raw", 1.0)])
def test_agent_reward(jobs, name, reward):
    job = jobs[0][name]
    stats = json.loads((job / "result.json").read_text())["stats"]
    assert stats["n_completed_trials"] == 1 and stats["n_errored_trials"] == 0, stats
    trial = _trial(job)
    result = json.loads((trial / "result.json").read_text())
    assert result["exception_info"] is None, result["exception_info"]
    assert result["agent_info"]["name"] == JOBS[name][0]
    assert result["verifier_result"]["rewards"] == {"reward": reward}
    assert float((trial / "verifier" / "reward.txt").read_text()) == reward
    assert ("1 passed" if reward else "1 failed") in (trial / "verifier" / "test-stdout.txt").read_text()


def test_terminus2_talks_to_the_model_and_keeps_a_trajectory(jobs):
    job_dirs, llm = jobs
    # Two terminus-2 jobs, two requests each: the reply, then the confirmation of task_complete.
    assert len(llm.requests) == 4
    first = [r for r in llm.requests if len(r["messages"]) == 1]
    assert len(first) == 2 and all(GREETING in r["messages"][0]["content"] for r in first)
    for name in ("terminus-2", "terminus-2-raw"):
        trajectory = json.loads((_trial(job_dirs[name]) / "agent" / "trajectory.json").read_text())
        assert trajectory["schema_version"].startswith("ATIF")
        agent_steps = [s for s in trajectory["steps"] if s["source"] == "agent"]
        assert agent_steps and all(s["model_name"].endswith(llm.model) for s in agent_steps)
    raw = json.loads((_trial(job_dirs["terminus-2-raw"]) / "agent" / "trajectory.json").read_text())
    assert any(s["message"] == REPLY for s in raw["steps"] if s["source"] == "agent")


@pytest.mark.parametrize("name", list(JOBS))
def test_job_layout_matches_fixture(jobs, name):
    assert _layout(jobs[0][name]) == _layout(JOB_FIXTURE / name)


if __name__ == "__main__":  # rewrite the committed fixture from a real run
    shutil.rmtree(JOB_FIXTURE, ignore_errors=True)
    print(run_jobs(JOB_FIXTURE)[0], file=sys.stderr)
