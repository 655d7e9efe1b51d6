"""Every parallel layout trains like one device: 4 optimizer steps, fp32, CPU, gloo.

Tolerance: 1e-5 relative on the loss and gradient norm of every step — the
reductions happen in a different order across ranks, so bitwise equality is not
expected, but anything structural (a lost document, a wrong normalization, a
mis-split weight) moves the loss by far more.
"""

from __future__ import annotations

import pytest

from nemo_terminal.testing import run_distributed

from _runs import base_overrides, train_history

REL = 1e-5


def _close(a: list[dict], b: list[dict], keys=("loss", "grad_norm")) -> None:
    assert len(a) == len(b)
    for step, (x, y) in enumerate(zip(a, b), start=1):
        assert x["loss_tokens"] == y["loss_tokens"], f"step {step}: different data {x} vs {y}"
        for key in keys:
            assert abs(x[key] - y[key]) <= REL * abs(x[key]), f"step {step} {key}: {x[key]} vs {y[key]}"


@pytest.fixture(scope="module")
def reference(train_inputs, tmp_path_factory):
    """One process, TP=PP=CP=DP=1, micro-batch 1 x 4."""
    run = tmp_path_factory.mktemp("ref")
    return run_distributed(train_history, world_size=1, overrides=base_overrides(train_inputs, run), with_params=True)[0]


@pytest.mark.dist
@pytest.mark.parametrize("layout", ["parallel.tp=2", "parallel.pp=2", "dp"])
def test_layout_matches_one_device(layout, reference, train_inputs, tmp_path):
    extra = [] if layout == "dp" else [layout]
    out = run_distributed(train_history, world_size=2, overrides=base_overrides(train_inputs, tmp_path) + extra)
    _close(reference["history"], out[0]["history"])
    assert reference["history"][-1]["loss"] < reference["history"][0]["loss"]


@pytest.mark.dist
def test_cp2_matches_cp1(train_inputs, tmp_path):
    """CP needs documents padded to 2*cp: both runs use the cp2-prepared data."""
    ref = run_distributed(train_history, world_size=1, overrides=base_overrides(train_inputs, tmp_path / "a", data="data_cp2"))
    cp2 = run_distributed(train_history, world_size=2,
                          overrides=base_overrides(train_inputs, tmp_path / "b", data="data_cp2") + ["parallel.cp=2"])
    _close(ref[0]["history"], cp2[0]["history"])


@pytest.mark.parametrize("mbs", [2, 4])
def test_micro_batch_split_matches(mbs, reference, train_inputs, tmp_path):
    out = run_distributed(train_history, world_size=1, with_params=True,
                          overrides=base_overrides(train_inputs, tmp_path) + [f"train.micro_batch_size={mbs}"])[0]
    _close(reference["history"], out["history"])
    for name, p in reference["params"].items():
        q = out["params"][name]
        assert (p - q).abs().max() <= REL * max(p.abs().max(), 1e-3), name
