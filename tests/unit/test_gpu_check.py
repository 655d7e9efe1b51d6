"""tools/gpu_check.sh on a CPU machine: its help, argument errors, and the documented skip (exit 77)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "gpu_check.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120,
                          check=False)


def test_help_documents_steps_and_exit_codes():
    out = _run("--help")
    assert out.returncode == 0
    assert "pytest -m gpu" in out.stdout and "77 skipped" in out.stdout and "thd_get_partitioned_indices" in out.stdout


@pytest.mark.parametrize("args", [["--bogus"], ["--out"]])
def test_bad_arguments_exit_2(args):
    out = _run(*args)
    assert out.returncode == 2 and "gpu_check:" in out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script runs for real")
def test_skips_without_a_gpu():
    out = _run()
    assert out.returncode == 77
    assert "gpu_check: skipped: no CUDA GPU visible" in out.stdout
