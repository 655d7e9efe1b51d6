"""Impossible setups fail before any compute, with one line naming the field and the fix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_terminal.testing import run_distributed

from _runs import base_overrides, train_history


def _train_error(overrides: list[str]) -> str:
    repo = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-m", "nemo_terminal", "train", "--config", str(repo / "configs/tiny_cpu.yaml"), *overrides],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return out.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("parallel.tp=3", "does not divide the 2 KV groups"),
        ("parallel.pp=3", "does not divide the 2 layers"),
        ("train.global_batch_size=3", "not divisible by micro_batch_size*dp"),
        ("train.precision=fp8", "train.precision"),
        ("train.lrr=1", "train.lrr"),
    ],
)
def test_bad_layouts(override, expected, train_inputs, tmp_path):
    assert expected in _train_error(base_overrides(train_inputs, tmp_path) + [override])


def test_missing_checkpoint(train_inputs, tmp_path):
    line = _train_error(base_overrides(train_inputs, tmp_path) + [f"model.megatron_dir={tmp_path / 'nope'}"])
    assert "model.megatron_dir" in line


def test_data_for_another_tokenizer(train_inputs, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(train_inputs["data"], data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["tokenizer_hash"] = "0" * 64
    (data / "manifest.json").write_text(json.dumps(manifest))
    line = _train_error(base_overrides(train_inputs, tmp_path / "run") + [f"data.path={data}"])
    assert "tokenizer" in line


def test_data_padded_for_another_layout(train_inputs, tmp_path):
    with pytest.raises(RuntimeError, match="pad"):
        run_distributed(train_history, world_size=2, overrides=base_overrides(train_inputs, tmp_path) + ["parallel.cp=2"])
