"""`train model.megatron_dir=` on a Megatron-LM-layout checkpoint (tracker file, iter_XXXXXXX,
args in common.pt, no model_config.json, no tokenizer inside; model.tokenizer gives it) trains
exactly like the same weights in our own layout, and the run's checkpoints carry what
Megatron-LM and Bridge read (tracker, args, run_config.yaml, TE _extra_state)."""

from __future__ import annotations

import shutil

import pytest
from _runs import base_overrides, train_many

from nemo_terminal.testing import run_distributed

pytestmark = pytest.mark.dist


def test_megatron_lm_layout_trains_like_ours(train_inputs, tmp_path):
    import yaml

    from nemo_terminal.checkpoint.safe_pickle import read_dcp_metadata, torch_load

    ours = train_inputs["megatron"]
    mlm = tmp_path / "mlm"
    mlm.mkdir()
    shutil.copytree(ours / "release", mlm / "iter_0000007")
    (mlm / "latest_checkpointed_iteration.txt").write_text("7")
    assert not (mlm / "model_config.json").exists() and not (mlm / "tokenizer").exists()
    two = {"train.max_steps": 2, "train.global_batch_size": 2}
    runs = {
        "ours": base_overrides(train_inputs, tmp_path / "ours", **two),
        "mlm": base_overrides(train_inputs, tmp_path / "run", **two, **{
            "model.megatron_dir": mlm, "model.tokenizer": ours / "tokenizer",
            "checkpoint.save_final": True}),
    }
    got = run_distributed(train_many, world_size=1, runs=runs)[0]
    assert got["ours"]["history"] == got["mlm"]["history"]  # same weights, same data: bit-identical steps

    run = tmp_path / "run"
    assert (run / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    it = run / "iter_0000002"
    common = torch_load(it / "common.pt")
    assert common["args"].num_layers == 2 and common["iteration"] == 2 and common["checkpoint_version"] == 3.0
    assert yaml.safe_load((it / "run_config.yaml").read_text())["model"]["num_layers"] == 2
    keys = read_dcp_metadata(it).state_dict_metadata
    assert "decoder.layers.self_attention.core_attention._extra_state/shard_1_2" in keys
    assert "decoder.final_layernorm._extra_state/shard_0_1" in keys
