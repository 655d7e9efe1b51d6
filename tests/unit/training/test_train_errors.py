"""Impossible setups fail before any compute, with one line naming the field and the fix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from _runs import RECIPE, base_overrides, setup_errors

from nemo_terminal.errors import UserError
from nemo_terminal.testing import run_distributed
from nemo_terminal.training.config import load_config


def test_setup_errors(train_inputs, tmp_path):
    bad_tok = tmp_path / "bad_tok"
    shutil.copytree(train_inputs["data"], bad_tok)
    manifest = json.loads((bad_tok / "manifest.json").read_text())
    manifest["tokenizer_hash"] = "0" * 64
    (bad_tok / "manifest.json").write_text(json.dumps(manifest))
    cases = {
        "tp3": ("parallel.tp=3", "does not divide the 2 KV groups"),
        "pp3": ("parallel.pp=3", "does not divide the 2 layers"),
        "gbs": ("train.micro_batch_size=3", "not divisible by micro_batch_size*dp"),
        "ckpt": (f"model.megatron_dir={tmp_path / 'nope'}", "model.megatron_dir"),
        "tokenizer": (f"data.path={bad_tok}", "tokenizer"),
    }
    runs = {name: base_overrides(train_inputs, tmp_path / name) + [o] for name, (o, _) in cases.items()}
    got = run_distributed(setup_errors, world_size=1, runs=runs)[0]
    for name, (_, expected) in cases.items():
        assert expected in got[name], (name, got[name])


def test_padding_for_another_layout(train_inputs, tmp_path):
    runs = {"cp2": base_overrides(train_inputs, tmp_path) + ["parallel.cp=2"]}
    got = run_distributed(setup_errors, world_size=2, runs=runs)
    assert "cp" in got[0]["cp2"] and "prepare" in got[0]["cp2"], got[0]["cp2"]


def test_config_errors_name_the_key(train_inputs, tmp_path):
    for override, expected in (("train.precision=fp8", "train.precision"), ("train.lrr=1", "train.lrr")):
        try:
            load_config(RECIPE, base_overrides(train_inputs, tmp_path) + [override])
        except UserError as err:
            assert expected in str(err)
        else:
            raise AssertionError(f"{override} was accepted")


def test_cli_prints_one_line_not_a_traceback(train_inputs, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "nemo_terminal", "train", "--config", str(RECIPE),
         *base_overrides(train_inputs, tmp_path), "parallel.tp=3"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: parallel.tp=3")
