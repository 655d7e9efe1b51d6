"""Packing changes nothing: the packed loss of a bin is Σ(document token losses) / Σ(loss tokens)."""

from __future__ import annotations

from _runs import base_overrides, packed_vs_unpacked

from nemo_terminal.testing import run_distributed


def test_packed_loss_equals_unpacked_documents(train_inputs, tmp_path):
    # micro-batch 4: four bins, several documents, concatenated into one THD sequence
    out = run_distributed(packed_vs_unpacked, world_size=1,
                          overrides=base_overrides(train_inputs, tmp_path, **{"train.micro_batch_size": 4}))[0]
    assert out["docs"] >= 5, out
    assert out["packed_count"] == out["doc_count"] > 0
    assert abs(out["packed"] - out["unpacked"]) <= 1e-5 * out["unpacked"], out
