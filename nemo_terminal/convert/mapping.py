"""The HF <-> megatron-core weight mapping for Qwen3, as data.

One table (`QWEN3`) lists every tensor pair; a closed set of transforms
(identity, QKV interleave, gate/up concat) is written once below. Import,
export and verify all read this table, so a mapping bug cannot hide in one
direction only. Adding a model family means adding a table.

The megatron side is named by *checkpoint* key: the `ShardedTensor.key` that
`GPTModel.sharded_state_dict()` produces, with per-layer tensors stacked on a
leading layer axis. Those keys are the same for every TP/PP layout and for the
local and Transformer Engine layer specs, so the table never depends on how a
model is split. Every tensor here is the full (TP=1) tensor of one layer;
megatron-core's sharded state dict cuts TP shards out of it (including fc1's
[gate_i; up_i] per-rank layout).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from nemo_terminal.errors import UserError
from nemo_terminal.models.qwen3 import Qwen3Config

LAYER = "{layer}"


class Transform(enum.Enum):
    """How HF tensors combine into one megatron tensor."""

    IDENTITY = "identity"
    QKV = "qkv_interleave"  # q, k, v -> per query group [q heads of g; k_g; v_g]
    GATE_UP = "gate_up_concat"  # gate, up -> [gate; up]


@dataclass(frozen=True)
class Mapping:
    """One megatron checkpoint tensor and the HF tensor(s) it is made of.

    `per_layer` megatron tensors are stacked on a leading layer axis in the
    checkpoint; their HF names contain `{layer}`.
    """

    megatron: str
    hf: tuple[str, ...]
    transform: Transform = Transform.IDENTITY
    per_layer: bool = False
    untied_only: bool = False


def _layer(meg: str, *hf: str, transform: Transform = Transform.IDENTITY) -> Mapping:
    return Mapping("decoder.layers." + meg, tuple(f"model.layers.{LAYER}." + h for h in hf), transform, per_layer=True)


# FACTS.md §3. Megatron names are the TE-spec checkpoint names (the local spec renames to them).
QWEN3: tuple[Mapping, ...] = (
    Mapping("embedding.word_embeddings.weight", ("model.embed_tokens.weight",)),
    _layer("self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight"),
    _layer("self_attention.linear_qkv.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
           "self_attn.v_proj.weight", transform=Transform.QKV),
    _layer("self_attention.q_layernorm.weight", "self_attn.q_norm.weight"),
    _layer("self_attention.k_layernorm.weight", "self_attn.k_norm.weight"),
    _layer("self_attention.linear_proj.weight", "self_attn.o_proj.weight"),
    _layer("mlp.linear_fc1.layer_norm_weight", "post_attention_layernorm.weight"),
    _layer("mlp.linear_fc1.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", transform=Transform.GATE_UP),
    _layer("mlp.linear_fc2.weight", "mlp.down_proj.weight"),
    Mapping("decoder.final_layernorm.weight", ("model.norm.weight",)),
    Mapping("output_layer.weight", ("lm_head.weight",), untied_only=True),  # tied: neither side has it
)


@dataclass(frozen=True)
class Pair:
    """A table row expanded for one layer (`layer` is None for non-layer tensors)."""

    megatron: str
    layer: int | None
    hf: tuple[str, ...]
    transform: Transform


def expand(cfg: Qwen3Config, table: Sequence[Mapping] = QWEN3) -> list[Pair]:
    """Every concrete tensor pair of a model with this config, in checkpoint order."""
    pairs = []
    for row in table:
        if row.untied_only and cfg.tie_word_embeddings:
            continue
        layers: Sequence[int | None] = range(cfg.num_hidden_layers) if row.per_layer else [None]
        for i in layers:
            hf = tuple(h.replace(LAYER, str(i)) for h in row.hf)
            pairs.append(Pair(row.megatron, i, hf, row.transform))
    return pairs


def check_coverage(pairs: Sequence[Pair], hf_keys: Sequence[str], megatron_keys: Sequence[tuple[str, int | None]],
                   hf_source: str, megatron_source: str) -> None:
    """Raise unless every HF key and every megatron (key, layer) is used by exactly one pair."""
    want_hf = [h for p in pairs for h in p.hf]
    want_meg = [(p.megatron, p.layer) for p in pairs]
    problems = []
    for name, want, have, source in (("HF tensor", want_hf, hf_keys, hf_source),
                                     ("megatron tensor", want_meg, megatron_keys, megatron_source)):
        dup = sorted({str(k) for k in want if want.count(k) > 1})
        missing = sorted(str(k) for k in set(want) - set(have))
        extra = sorted(str(k) for k in set(have) - set(want))
        if dup:
            problems.append(f"{name}s mapped more than once: {dup}")
        if missing:
            problems.append(f"{source} lacks {name}s {_short(missing)}")
        if extra:
            problems.append(f"{source} has {name}s no mapping covers {_short(extra)}")
    if problems:
        raise UserError("; ".join(problems))


def _short(names: list[str], limit: int = 8) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return "[" + ", ".join(names[:limit]) + "]" + more


# -- the transforms, each written once, both directions --------------------------------------------


def hf_to_megatron(transform: Transform, tensors: Sequence[torch.Tensor], cfg: Qwen3Config) -> torch.Tensor:
    """HF tensor(s) of one pair -> the full (TP=1) megatron tensor of that pair."""
    if transform is Transform.IDENTITY:
        (t,) = tensors
        return t
    if transform is Transform.GATE_UP:
        gate, up = tensors
        return torch.cat([gate, up], dim=0)
    q, k, v = tensors
    groups, d = cfg.num_key_value_heads, cfg.head_dim
    per_group = cfg.num_attention_heads // groups
    hidden = q.shape[-1]
    qkv = torch.cat(
        [q.reshape(groups, per_group * d, hidden), k.reshape(groups, d, hidden), v.reshape(groups, d, hidden)], dim=1
    )
    return qkv.reshape(groups * (per_group + 2) * d, hidden)


def megatron_to_hf(transform: Transform, tensor: torch.Tensor, cfg: Qwen3Config) -> list[torch.Tensor]:
    """The full megatron tensor of one pair -> its HF tensor(s), in table order (contiguous)."""
    if transform is Transform.IDENTITY:
        return [tensor]
    if transform is Transform.GATE_UP:
        gate, up = torch.chunk(tensor, 2, dim=0)
        return [gate.contiguous(), up.contiguous()]
    groups, d = cfg.num_key_value_heads, cfg.head_dim
    per_group = cfg.num_attention_heads // groups
    hidden = tensor.shape[-1]
    grouped = tensor.reshape(groups, (per_group + 2) * d, hidden)
    q, k, v = torch.split(grouped, [per_group * d, d, d], dim=1)
    return [t.reshape(-1, hidden).contiguous() for t in (q, k, v)]


def megatron_shape(pair: Pair, hf_shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    """Shape of the megatron tensor a pair makes (per layer, without the layer axis)."""
    if pair.transform is Transform.IDENTITY:
        return tuple(hf_shapes[0])
    return (sum(s[0] for s in hf_shapes), hf_shapes[0][1])


def iter_hf_names(pairs: Sequence[Pair]) -> Iterator[str]:
    for p in pairs:
        yield from p.hf
