"""attention_backend="torch" inside a real megatron GPTModel: packing, CP=2 and PP=2 on gloo.

fp32 on CPU, world size 2, a tiny Qwen3 (hidden 64, 4 heads, 2 KV groups, head_dim 32, 2 layers)
built with transformers and copied into megatron. Tolerances:
- packed logits vs each document alone through HF: max abs <= 1e-4;
- megatron's THD rope vs HF rope at the batch's per-document positions: max abs <= 1e-5;
- CP=2 vs CP=1 and PP=2 vs PP=1: loss and every gradient (norm-wise) <= 1e-5 relative.
"""

from __future__ import annotations

import pytest
from _attn_runs import packed_cp_run, packed_pp_run

from nemo_terminal.testing import run_distributed

REL = 1e-5


@pytest.mark.dist
def test_packed_matches_hf_and_cp2_matches_cp1():
    results = run_distributed(packed_cp_run, world_size=2)
    for r in results:
        for cp in (1, 2):
            assert r[f"hf_logit_err_cp{cp}"] <= 1e-4, r
            assert r[f"rope_err_cp{cp}"] <= 1e-5, r  # rotary uses per-document (and per-CP-chunk) positions
        assert r["bshd_logit_err_cp1"] <= 1e-4, r  # unpacked input (no packed_seq_params): one document
        assert abs(r["loss_cp2"] - r["loss_cp1"]) <= REL * abs(r["loss_cp1"]), r
        assert len(r["grad_rel_err"]) == 2 * 8 + 3  # every parameter compared
        bad = {n: e for n, e in r["grad_rel_err"].items() if not e <= REL}
        assert not bad, bad
        assert min(r["grad_norms"].values()) > 0  # gradients really flowed everywhere
    # Both CP ranks agree on the global loss; they hold different shares of the tokens.
    assert results[0]["loss_cp2"] == pytest.approx(results[1]["loss_cp2"], rel=1e-6)


@pytest.mark.dist
def test_packed_pp2_matches_pp1():
    results = run_distributed(packed_pp_run, world_size=2)
    pp1, pp2 = results[0][1], [r[2] for r in results]
    # packed_seq_params reached both stages on every micro-batch (1F1B: 4 forwards per stage).
    assert all(r["seen_cu_end"] == [40, 40, 40, 40] for r in pp2), [r["seen_cu_end"] for r in pp2]
    assert pp2[0]["tokens"] == pp1["tokens"] > 0
    assert abs(pp2[0]["loss_sum"] - pp1["loss_sum"]) <= REL * abs(pp1["loss_sum"]), \
        (pp1["loss_sum"], pp2[0]["loss_sum"])
    grads = {**pp2[0]["grads"], **pp2[1]["grads"]}
    assert set(grads) == set(pp1["grads"]), sorted(set(grads) ^ set(pp1["grads"]))
    for name, ref in pp1["grads"].items():
        err = float((grads[name] - ref).norm() / ref.norm())
        assert err <= REL, (name, err)
