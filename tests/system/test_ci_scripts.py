"""The CI entry point and tools/ci_system_deps.sh: shellcheck-clean, and the deps script is a no-op when done."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from nemo_terminal.testing import find_tool, require, require_tool

pytestmark = pytest.mark.system
REPO = Path(__file__).resolve().parents[2]
DEPS = REPO / "tools" / "ci_system_deps.sh"


def test_shellcheck_clean():
    shellcheck = require_tool("shellcheck")
    proc = subprocess.run([shellcheck, str(REPO / ".ci" / "run"), str(DEPS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_system_deps_are_idempotent_and_fast_when_done(harbor_exe):
    """Everything is in place (the fixtures require it), so a rerun must only check, in seconds."""
    require(None if os.geteuid() == 0 else "the system deps script needs root")
    for tool in ("slurmctld", "slurmd", "sbatch", "shellcheck", "debootstrap"):
        require(None if find_tool(tool) else f"{tool} is not installed")
    start = time.monotonic()
    proc = subprocess.run(["bash", str(DEPS)], capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ready in" in proc.stderr
    for step in ("apt-get install", "starting dockerd", "debootstrap", "venv at"):
        assert step not in proc.stderr, proc.stderr
    assert elapsed < 60, f"a no-op run took {elapsed:.0f} s"
