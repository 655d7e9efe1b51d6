"""The Slurm scripts without a cluster: syntax, shellcheck, the container switch, required variables."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nemo_terminal.testing import require_tool

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "slurm").glob("*.sbatch")) + [REPO / "slurm" / "common.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.system
def test_shellcheck_clean():
    shellcheck = require_tool("shellcheck")
    proc = subprocess.run([shellcheck, "-x", *map(str, SCRIPTS)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def _container_args(tmp_path: Path, image: str | None, pyxis: bool) -> tuple[list[str], str]:
    """CONTAINER_ARGS as common.sh computes them, with an `srun` whose --help has or lacks pyxis."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    help_text = "--container-image=[USER@][REGISTRY#]IMAGE[:TAG]|PATH" if pyxis else "--chdir=path"
    (fake_bin / "srun").write_text(f"#!/bin/sh\necho '{help_text}'\n")
    (fake_bin / "srun").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "CONTAINER_IMAGE"}
    env.update(PATH=f"{fake_bin}:{env['PATH']}", PROJECT_DIR=str(REPO))
    if image is not None:
        env["CONTAINER_IMAGE"] = image
    script = (f'source "{REPO}/slurm/common.sh"; '
              'for a in ${CONTAINER_ARGS[@]+"${CONTAINER_ARGS[@]}"}; do echo "$a"; done')
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True)
    return proc.stdout.splitlines(), proc.stderr


def test_container_flags_with_pyxis_default_image(tmp_path):
    args, _ = _container_args(tmp_path, None, pyxis=True)
    assert args == ["--container-image=nvcr.io/nvidia/pytorch:25.11-py3",
                    f"--container-mounts={REPO}:{REPO}", f"--container-workdir={REPO}"]


@pytest.mark.parametrize("image", ["", "none"])
def test_no_container_when_image_is_empty_or_none(tmp_path, image):
    assert _container_args(tmp_path, image, pyxis=True) == ([], "")


def test_no_container_flags_without_pyxis(tmp_path):
    args, err = _container_args(tmp_path, "nvcr.io/nvidia/pytorch:25.01-py3", pyxis=False)
    assert args == [] and "pyxis is not installed" in err


@pytest.mark.parametrize("script,missing", [("train.sbatch", "MEGATRON_DIR"), ("convert.sbatch", "HF_DIR"),
                                            ("prepare.sbatch", "INPUT")])
def test_required_variables_fail_before_any_srun(script, missing):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MEGATRON_DIR", "DATA_DIR", "HF_DIR", "INPUT") and not k.startswith("SLURM_")}
    env.update(PROJECT_DIR=str(REPO), CONTAINER_IMAGE="none")
    proc = subprocess.run(["bash", str(REPO / "slurm" / script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and f"{missing} is not set" in proc.stderr
