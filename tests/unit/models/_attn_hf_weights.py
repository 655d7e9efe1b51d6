"""Test-local: copy a tiny HF Qwen3's weights into a TP=1 megatron GPTModel (local spec).

Stop-gap for the attention tests only; replace with nemo_terminal.convert's loader when it
lands. Mapping per FACTS.md §3: QKV interleaved per query group, fc1 = [gate; up].
"""

from __future__ import annotations

import torch

SHAPE = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
             head_dim=32, intermediate_size=128)


def tiny_hf_model(seed: int = 0, tie: bool = False):
    """A random fp32 HF Qwen3ForCausalLM with eager attention (the plainest HF path)."""
    import transformers

    cfg = transformers.Qwen3Config(
        vocab_size=151936, rms_norm_eps=1e-6, rope_theta=1_000_000.0, max_position_embeddings=4096,
        tie_word_embeddings=tie, attention_dropout=0.0, attn_implementation="eager", **SHAPE,
    )
    torch.manual_seed(seed)
    model = transformers.Qwen3ForCausalLM(cfg).float().eval()
    with torch.no_grad():  # norms away from 1 so a swapped norm shows up in the logits
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    return model


def _qkv(sd: dict, p: str, heads: int, groups: int, dim: int) -> torch.Tensor:
    q = sd[p + "self_attn.q_proj.weight"].view(groups, heads // groups, dim, -1)
    k = sd[p + "self_attn.k_proj.weight"].view(groups, 1, dim, -1)
    v = sd[p + "self_attn.v_proj.weight"].view(groups, 1, dim, -1)
    return torch.cat([q, k, v], dim=1).reshape(-1, q.shape[-1])


def hf_to_megatron_state(hf_model, first_layer: int, num_layers: int, pre: bool, post: bool) -> dict:
    """Megatron state for one pipeline stage holding global layers [first_layer, first_layer+num_layers)."""
    sd = hf_model.state_dict()
    c = hf_model.config
    out = {}
    if pre:
        out["embedding.word_embeddings.weight"] = sd["model.embed_tokens.weight"]
    for i in range(num_layers):
        p, m = f"model.layers.{first_layer + i}.", f"decoder.layers.{i}."
        out.update({
            m + "input_layernorm.weight": sd[p + "input_layernorm.weight"],
            m + "self_attention.linear_qkv.weight": _qkv(
                sd, p, c.num_attention_heads, c.num_key_value_heads, c.head_dim
            ),
            m + "self_attention.linear_proj.weight": sd[p + "self_attn.o_proj.weight"],
            m + "self_attention.q_layernorm.weight": sd[p + "self_attn.q_norm.weight"],
            m + "self_attention.k_layernorm.weight": sd[p + "self_attn.k_norm.weight"],
            m + "pre_mlp_layernorm.weight": sd[p + "post_attention_layernorm.weight"],
            m + "mlp.linear_fc1.weight": torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]]),
            m + "mlp.linear_fc2.weight": sd[p + "mlp.down_proj.weight"],
        })
    if post:
        out["decoder.final_layernorm.weight"] = sd["model.norm.weight"]
        if not c.tie_word_embeddings:
            out["output_layer.weight"] = sd["lm_head.weight"]
    return out


def load_into(model, state: dict) -> None:
    """Copy `state` into `model`'s parameters; every parameter must be matched exactly once."""
    params = dict(model.named_parameters())
    missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    assert not missing and not extra, f"unmatched: megatron {missing}, hf {extra}"
    with torch.no_grad():
        for name, p in params.items():
            assert p.shape == state[name].shape, (name, p.shape, state[name].shape)
            p.copy_(state[name])
