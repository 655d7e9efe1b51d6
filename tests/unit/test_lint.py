"""`ruff check` (the rules in pyproject.toml's [tool.ruff]) finds nothing in the package, tests and tools.

Without ruff installed this skips on a developer's machine and fails in CI (`require`), so a CI
image that lost the `test` extra cannot turn the lint gate green.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_terminal.testing import require

REPO = Path(__file__).resolve().parents[2]
TARGETS = ("nemo_terminal", "tests", "tools")


def test_ruff_check_is_clean():
    require(None if importlib.util.find_spec("ruff") else "ruff is not installed (pip install -e '.[test]')")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *TARGETS],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"ruff check {' '.join(TARGETS)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}",
                    pytrace=False)
