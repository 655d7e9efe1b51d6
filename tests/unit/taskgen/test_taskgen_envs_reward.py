"""Domain images (Dockerfiles, build commands) and the weighted reward of a written task."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from nemo_terminal.cli import main
from nemo_terminal.taskgen.envs import dockerfile, image_note
from nemo_terminal.taskgen.harbor_task import TaskSettings, write_task
from nemo_terminal.taskgen.resources import domains
from nemo_terminal.taskgen.spec import TaskFile, TaskSpec, TaskTest


def test_nine_domain_dockerfiles_take_the_base_image_as_an_argument(tmp_path):
    assert len(domains()) == 9
    assert main(["taskgen", "envs", "--out", str(tmp_path)]) == 0
    for d in domains():
        text = (tmp_path / f"{d}.Dockerfile").read_text()
        assert text == dockerfile(d)
        lines = [x for x in text.splitlines() if x and not x.startswith("#")]
        assert lines[0].startswith("ARG BASE_IMAGE=python:3.12-slim") and lines[1] == "FROM ${BASE_IMAGE}"
        assert "tmux" in text and "pytest==" in text and lines[-1] == "WORKDIR /app"
    assert "pandas" in image_note("data-science") and "openssl" in image_note("security")


def test_build_commands(tmp_path, capsys):
    args = ["taskgen", "envs", "--out", str(tmp_path), "--build", "--dry-run", "--runtime", "podman", "--offline",
            "--base-image", "local/debian-tools:bookworm", "--domains", "security", "debugging"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"podman build -t nemo-terminal/{d}:1 -f {tmp_path}/{d}.Dockerfile "
        "--build-arg BASE_IMAGE=local/debian-tools:bookworm "
        f"--build-arg APT_PACKAGES= --build-arg PIP_PACKAGES= {tmp_path}" for d in ("security", "debugging")]


SPEC = TaskSpec(
    instruction="Write the sum of the numbers in numbers.txt to sum.txt.", domain="data-processing",
    files=(TaskFile("numbers.txt", "1\n2\n3\n"),),
    tests=(  # hand-written here (not LLM output): they may run on the host
        TaskTest("test_sum_exists", 1, "from pathlib import Path\n\n\n"
                                       "def test_sum_exists():\n    assert Path('sum.txt').exists()\n"),
        TaskTest("test_sum_value", 2, "from pathlib import Path\n\n\n"
                                      "def test_sum_value():\n    assert Path('sum.txt').read_text().strip() == '6'\n"),
        TaskTest("test_param", 3, "import pytest\n\n\n@pytest.mark.parametrize('n', [1, 2])\n"
                                  "def test_param(n):\n    assert n == 1\n"),
        TaskTest("test_fixture_error", 4, "import pytest\n\n\n@pytest.fixture\n"
                                          "def broken():\n    raise RuntimeError\n\n\n"
                                          "def test_fixture_error(broken):\n    pass\n"),
    ))


def _reward(tmp_path: Path, app_files: dict[str, str], spec: TaskSpec = SPEC) -> str:
    """Run the task's pytest as tests/test.sh does, with the working directory and reward file moved."""
    run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    task = write_task(spec, run / "task", TaskSettings(image="nemo-terminal/data-processing:1"))
    app = run / "app"
    app.mkdir()
    for name, text in app_files.items():
        (app / name).write_text(text)
    tests = task / "tests"
    reward = run / "reward.txt"
    subprocess.run(_pytest_argv(tests), cwd=app, capture_output=True, env={**os.environ, "REWARD_FILE": str(reward)})
    return reward.read_text().strip()


def _pytest_argv(tests: Path) -> list[str]:
    """The pytest command of the task's own tests/test.sh, with /tests moved to `tests`."""
    line = next(x for x in (tests / "test.sh").read_text().splitlines() if x.startswith("python3 -m pytest"))
    argv = [a.replace("/tests", str(tests)) for a in shlex.split(line)]
    return [sys.executable, *argv[1:]]


def test_weighted_reward(tmp_path):
    # total weight 10: exists (1) + value (2) pass; one of two parametrized cases fails; fixture errors
    assert _reward(tmp_path, {"sum.txt": "6\n"}) == "0.3"
    assert _reward(tmp_path, {"sum.txt": "7\n"}) == "0.1"
    assert _reward(tmp_path, {}) == "0"


def test_agent_files_do_not_change_how_tests_run(tmp_path):
    """A conftest.py or pytest.ini the agent leaves in the working directory is not loaded."""
    cheat = ("import pytest\n\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n"
             "    outcome = yield\n    outcome.get_result().outcome = 'passed'\n")
    planted = {"sum.txt": "7\n", "conftest.py": cheat, "pytest.ini": "[pytest]\naddopts = -p no:python\n"}
    assert _reward(tmp_path, planted) == "0.1"


def test_weights_file_matches_tests(tmp_path):
    task = write_task(SPEC, tmp_path / "t", TaskSettings(image="x"))
    weights = json.loads((task / "tests" / "weights.json").read_text())
    assert weights == {"test_sum_exists": 1, "test_sum_value": 2, "test_param": 3, "test_fixture_error": 4}
