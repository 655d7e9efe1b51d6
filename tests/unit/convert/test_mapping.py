"""The mapping table and its transforms, without megatron processes."""

from __future__ import annotations

import pytest
import torch

from nemo_terminal.convert.mapping import Transform, check_coverage, expand, hf_to_megatron, megatron_to_hf
from nemo_terminal.errors import UserError
from nemo_terminal.models.qwen3 import Qwen3Config


def _cfg(tied=False):
    return Qwen3Config(num_hidden_layers=2, hidden_size=6, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=3, intermediate_size=5, vocab_size=11, tie_word_embeddings=tied)


def test_qkv_interleave_layout_and_inverse():
    cfg = _cfg()
    d, h = cfg.head_dim, cfg.hidden_size
    # Row r of head j holds value 100*head + r, so the layout is readable from the result.
    q = torch.cat([torch.full((d, h), 100.0 * j) + torch.arange(d)[:, None] for j in range(4)])
    k = torch.cat([torch.full((d, h), 1000.0 + 100 * g) for g in range(2)])
    v = torch.cat([torch.full((d, h), 2000.0 + 100 * g) for g in range(2)])
    qkv = hf_to_megatron(Transform.QKV, [q, k, v], cfg)
    heads = qkv[::d, 0].tolist()  # first row of each head block
    assert heads == [0, 100, 1000, 2000, 200, 300, 1100, 2100]  # group g: its 2 q heads, k_g, v_g
    back = megatron_to_hf(Transform.QKV, qkv, cfg)
    assert all(torch.equal(a, b) for a, b in zip(back, [q, k, v], strict=False))


def test_gate_up_and_identity_inverse():
    cfg = _cfg()
    gate, up = torch.randn(5, 6), torch.randn(5, 6)
    fc1 = hf_to_megatron(Transform.GATE_UP, [gate, up], cfg)
    assert torch.equal(fc1[:5], gate) and torch.equal(fc1[5:], up)
    assert all(torch.equal(a, b) for a, b in zip(megatron_to_hf(Transform.GATE_UP, fc1, cfg), [gate, up], strict=False))
    assert megatron_to_hf(Transform.IDENTITY, gate, cfg)[0] is gate


@pytest.mark.parametrize("tied", [True, False])
def test_expand_covers_each_name_once(tied):
    pairs = expand(_cfg(tied))
    hf = [h for p in pairs for h in p.hf]
    assert len(hf) == len(set(hf)) == 2 * 11 + 2 + (0 if tied else 1)
    assert ("lm_head.weight" in hf) is not tied
    check_coverage(pairs, hf, [(p.megatron, p.layer) for p in pairs], "hf", "meg")


def test_coverage_errors_list_names():
    pairs = expand(_cfg())
    hf = [h for p in pairs for h in p.hf]
    meg = [(p.megatron, p.layer) for p in pairs]
    with pytest.raises(UserError, match=r"hf lacks HF tensors \[model.layers.1.mlp.up_proj.weight\]"):
        check_coverage(pairs, [h for h in hf if h != "model.layers.1.mlp.up_proj.weight"], meg, "hf", "meg")
    with pytest.raises(UserError, match=r"no mapping covers \[model.layers.0.self_attn.q_proj.bias\]"):
        check_coverage(pairs, hf + ["model.layers.0.self_attn.q_proj.bias"], meg, "hf", "meg")
    with pytest.raises(UserError, match="meg has megatron tensors no mapping covers"):
        check_coverage(pairs, hf, meg + [("decoder.layers.mlp.router.weight", 0)], "hf", "meg")
