"""nemo_terminal.testing.require_tool: a missing system tool skips locally and fails in CI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nemo_terminal.testing import in_ci, require, require_tool

MISSING = "nemo-terminal-no-such-tool"


@pytest.mark.parametrize("value, expected", [
    (None, False), ("", False), ("0", False), ("false", False), ("False", False),
    ("true", True), ("1", True), ("yes", True),
])
def test_in_ci(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_missing_tool_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=MISSING):
        require_tool(MISSING)


def test_missing_tool_fails_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=MISSING):
        require_tool(MISSING)


def test_present_tool_passes_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert os.access(require_tool("sh"), os.X_OK)
    require(None)  # nothing missing: no skip, no failure


def _run_pytest(tmp_path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_needs_tool.py").write_text(
        "from nemo_terminal.testing import require_tool\n\n"
        f"def test_needs_tool():\n    require_tool({MISSING!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "-c", os.devnull, str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )


def test_ci_run_goes_red_when_a_tool_is_missing(tmp_path):
    """The whole point, end to end: the same test file is red under CI=true, skipped without CI."""
    red = _run_pytest(tmp_path, "true")
    assert red.returncode == 1 and "1 failed" in red.stdout, red.stdout
    assert f"{MISSING} is not installed" in red.stdout
    local = _run_pytest(tmp_path, None)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout
