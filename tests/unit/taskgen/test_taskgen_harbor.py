"""Against Harbor 0.25 itself (its own venv): `harbor lint` on written tasks, and the collect fixture
checked and rebuilt with Harbor's models. Skipped without Harbor, failed in CI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from replay_server import ReplayServer
from taskgen_cases import DATA, HARBOR_JOB, HERE, generate_args

from nemo_terminal.cli import main
from nemo_terminal.harbor.install import HARBOR_VERSION, find_harbor
from nemo_terminal.testing import require

# Our tasks set verifier.environment_mode = "shared" on purpose: the tests check the container the
# agent worked in (installed packages, permissions, processes), as in Terminal-Bench; a separate
# verifier container would not see them. So `harbor lint --ignore shared-verifier` passes them.


@pytest.fixture(scope="module")
def harbor() -> Path:
    exe = find_harbor()
    require(None if exe else f"Harbor {HARBOR_VERSION} (its venv) is not installed")
    assert exe is not None
    return exe


def test_generated_and_adapted_tasks_pass_harbor_lint(harbor, tmp_path):
    with ReplayServer() as s:
        assert main(generate_args(s.url, tmp_path / "gen")) == 0
    for kind in ("math", "code", "swe"):
        assert main(["taskgen", "adapt", "--input", str(DATA / "adapters" / f"{kind}.jsonl"), "--kind", kind,
                     "--out", str(tmp_path / kind)]) == 0
    tasks = sorted((tmp_path / "gen" / "tasks").iterdir()) + [
        t for kind in ("math", "code", "swe") for t in sorted((tmp_path / kind / "tasks").iterdir())]
    assert len(tasks) == 4 + 2 + 1 + 1
    broken = tmp_path / "broken"  # proves lint reads our files: an empty instruction is a finding
    shutil.copytree(tasks[0], broken)
    (broken / "instruction.md").write_text("\n")
    proc = subprocess.run([str(harbor), "lint", "--json", *map(str, tasks), str(broken)],
                          capture_output=True, text=True)
    findings: dict[str, set[str]] = {}
    for f in json.loads(proc.stdout):
        task = next(str(t) for t in [*tasks, broken] if Path(f["path"]).is_relative_to(t))
        findings.setdefault(task, set()).add(f["rule"])
    # With the default rules, the only finding on our tasks is the one we choose (see above).
    assert findings == {**{str(t): {"shared-verifier"} for t in tasks},
                        str(broken): {"shared-verifier", "invalid-task-files"}}, proc.stderr


def test_collect_fixture_is_what_harbor_writes(harbor, tmp_path):
    """The fixture validates against Harbor's models, and rebuilding it gives the same bytes."""
    python = harbor.parent / "python"
    check = (
        "import sys, pathlib\n"
        "from harbor.models.trial.result import TrialResult\n"
        "from harbor.models.trial.config import TrialConfig\n"
        "from harbor.models.job.result import JobResult\n"
        "from harbor.models.trajectories import Trajectory\n"
        "job = pathlib.Path(sys.argv[1])\n"
        "JobResult.model_validate_json((job / 'result.json').read_text())\n"
        "n = 0\n"
        "for t in sorted(p for p in job.iterdir() if p.is_dir()):\n"
        "    TrialConfig.model_validate_json((t / 'config.json').read_text())\n"
        "    if (t / 'result.json').exists(): "
        "TrialResult.model_validate_json((t / 'result.json').read_text()); n += 1\n"
        "    if (t / 'agent/trajectory.json').exists(): "
        "Trajectory.model_validate_json((t / 'agent/trajectory.json').read_text())\n"
        "print(n)\n"
    )
    proc = subprocess.run([str(python), "-c", check, str(HARBOR_JOB)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "5", proc.stderr
    rebuilt = tmp_path / HARBOR_JOB.name
    subprocess.run([str(python), str(HERE / "make_harbor_job.py"), str(rebuilt)], check=True)
    files = {p.relative_to(HARBOR_JOB) for p in HARBOR_JOB.rglob("*") if p.is_file()}
    assert files == {p.relative_to(rebuilt) for p in rebuilt.rglob("*") if p.is_file()}
    for f in files:
        assert (HARBOR_JOB / f).read_bytes() == (rebuilt / f).read_bytes(), f
