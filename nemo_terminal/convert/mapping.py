"""The HF <-> megatron-core weight mapping for Qwen3, as data.

One table (`QWEN3`) lists every tensor pair; a closed set of transforms
(identity, QKV interleave, gate/up concat, and the tied-lm_head check) is
written once below, each with both directions, its shape rule and whether it
only selects rows (what export's byte copy relies on). Import,
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
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

import torch

from nemo_terminal.errors import UserError
from nemo_terminal.models.qwen3 import Qwen3Config

LAYER = "{layer}"
Shape = tuple[int, ...]


@dataclass(frozen=True)
class _Rule:
    """Both directions of one transform, its shape rule, and what export may assume about it."""

    to_megatron: Callable[[Sequence[torch.Tensor], Qwen3Config], torch.Tensor]
    to_hf: Callable[[torch.Tensor, Qwen3Config], list[torch.Tensor]]
    megatron_shape: Callable[[Sequence[Shape]], Shape]
    # to_hf only picks rows (axis 0) of the megatron tensor: export may then copy those rows'
    # bytes file to file instead of loading the tensor (exporter._byte_ranges relies on it).
    selects_rows: bool
    # False: the HF tensor is a redundant copy, checked on import and never converted or written.
    maps: bool = True


def _identity_to_megatron(tensors: Sequence[torch.Tensor], cfg: Qwen3Config) -> torch.Tensor:
    (t,) = tensors
    return t


def _gate_up_to_megatron(tensors: Sequence[torch.Tensor], cfg: Qwen3Config) -> torch.Tensor:
    gate, up = tensors
    return torch.cat([gate, up], dim=0)


def _gate_up_to_hf(tensor: torch.Tensor, cfg: Qwen3Config) -> list[torch.Tensor]:
    gate, up = torch.chunk(tensor, 2, dim=0)
    return [gate.contiguous(), up.contiguous()]


def _qkv_to_megatron(tensors: Sequence[torch.Tensor], cfg: Qwen3Config) -> torch.Tensor:
    q, k, v = tensors
    groups, d = cfg.num_key_value_heads, cfg.head_dim
    per_group = cfg.num_attention_heads // groups
    hidden = q.shape[-1]
    qkv = torch.cat(
        [q.reshape(groups, per_group * d, hidden), k.reshape(groups, d, hidden), v.reshape(groups, d, hidden)], dim=1
    )
    return qkv.reshape(groups * (per_group + 2) * d, hidden)


def _qkv_to_hf(tensor: torch.Tensor, cfg: Qwen3Config) -> list[torch.Tensor]:
    groups, d = cfg.num_key_value_heads, cfg.head_dim
    per_group = cfg.num_attention_heads // groups
    hidden = tensor.shape[-1]
    grouped = tensor.reshape(groups, (per_group + 2) * d, hidden)
    q, k, v = torch.split(grouped, [per_group * d, d, d], dim=1)
    return [t.reshape(-1, hidden).contiguous() for t in (q, k, v)]


def _tied_copy_to_megatron(tensors: Sequence[torch.Tensor], cfg: Qwen3Config) -> torch.Tensor:
    copy, embedding = tensors
    if not bitwise_equal(copy, embedding):
        raise ValueError("the tied copy differs from the embedding")
    return embedding


def _same_shape(shapes: Sequence[Shape]) -> Shape:
    return tuple(shapes[0])


def _stacked_rows(shapes: Sequence[Shape]) -> Shape:
    return (sum(s[0] for s in shapes), *shapes[0][1:])


class Transform(enum.Enum):
    """The closed set of ways HF tensors make one megatron tensor; each member carries its own rule,
    so there is no dispatch to fall through and a new member must state all of it."""

    IDENTITY = _Rule(_identity_to_megatron, lambda t, cfg: [t], _same_shape, selects_rows=True)
    # q, k, v -> per query group [q heads of g; k_g; v_g]
    QKV = _Rule(_qkv_to_megatron, _qkv_to_hf, _stacked_rows, selects_rows=True)
    # gate, up -> [gate; up]
    GATE_UP = _Rule(_gate_up_to_megatron, _gate_up_to_hf, _stacked_rows, selects_rows=True)
    # (lm_head copy, embedding) of a tied model: checked bitwise equal, not mapped.
    TIED_COPY = _Rule(_tied_copy_to_megatron, lambda t, cfg: [t, t], lambda s: tuple(s[1]), selects_rows=True,
                      maps=False)

    @property
    def rule(self) -> _Rule:
        return self.value

    @property
    def selects_rows(self) -> bool:
        return self.value.selects_rows

    @property
    def maps(self) -> bool:
        return self.value.maps


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (NaNs and signed zeros included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


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
    tied_only: bool = False


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
    Mapping("output_layer.weight", ("lm_head.weight",), untied_only=True),
    # Tied (0.6B-4B): megatron has no output layer; HF files may still store lm_head (published
    # Qwen3-0.6B/1.7B do). It must equal the embedding bit for bit; it is then simply not mapped.
    Mapping("embedding.word_embeddings.weight", ("lm_head.weight", "model.embed_tokens.weight"),
            Transform.TIED_COPY, tied_only=True),
)


@dataclass(frozen=True)
class Pair:
    """A table row expanded for one layer (`layer` is None for non-layer tensors)."""

    megatron: str
    layer: int | None
    hf: tuple[str, ...]
    transform: Transform


def _applies(row: Mapping, cfg: Qwen3Config) -> bool:
    return not ((row.untied_only and cfg.tie_word_embeddings) or (row.tied_only and not cfg.tie_word_embeddings))


def expand(cfg: Qwen3Config, table: Sequence[Mapping] = QWEN3) -> list[Pair]:
    """Every concrete tensor pair a model with this config converts, in checkpoint order."""
    return [p for p in _expand_all(cfg, table) if p.transform.maps]


def tied_copies(cfg: Qwen3Config, table: Sequence[Mapping] = QWEN3) -> list[Pair]:
    """The pairs checked but not converted: (redundant HF copy, the HF tensor it must equal)."""
    return [p for p in _expand_all(cfg, table) if not p.transform.maps]


def check_tied_copies(cfg: Qwen3Config, hf_keys: Collection[str], read: Callable[[Sequence[str]], list[torch.Tensor]],
                      hf_source: str) -> None:
    """Each redundant HF copy present in the files must equal its original bit for bit."""
    for pair in tied_copies(cfg):
        if pair.hf[0] not in hf_keys:
            continue
        try:
            hf_to_megatron(pair.transform, read(pair.hf), cfg)
        except ValueError:
            raise UserError(
                f"{hf_source}: {pair.hf[0]} differs from {pair.hf[1]} although config.json says "
                "tie_word_embeddings=true; set tie_word_embeddings to false if the checkpoint is really untied"
            ) from None


def _expand_all(cfg: Qwen3Config, table: Sequence[Mapping]) -> list[Pair]:
    pairs = []
    for row in table:
        if not _applies(row, cfg):
            continue
        layers: Sequence[int | None] = range(cfg.num_hidden_layers) if row.per_layer else [None]
        for i in layers:
            hf = tuple(h.replace(LAYER, str(i)) for h in row.hf)
            pairs.append(Pair(row.megatron, i, hf, row.transform))
    return pairs


def check_coverage(pairs: Sequence[Pair], hf_keys: Sequence[str], megatron_keys: Sequence[tuple[str, int | None]],
                   hf_source: str, megatron_source: str, optional_hf: Collection[str] = ()) -> None:
    """Raise unless every HF key and every megatron (key, layer) is used by exactly one pair.

    `optional_hf` names HF tensors that may be present without a pair (checked elsewhere: tied copies).
    """
    want_hf = [h for p in pairs for h in p.hf]
    want_meg = [(p.megatron, p.layer) for p in pairs]
    problems = []
    for name, want, have, source, optional in (("HF tensor", want_hf, hf_keys, hf_source, set(optional_hf)),
                                               ("megatron tensor", want_meg, megatron_keys, megatron_source, set())):
        dup = sorted({str(k) for k in want if want.count(k) > 1})
        missing = sorted(str(k) for k in set(want) - set(have))
        extra = sorted(str(k) for k in set(have) - set(want) - optional)
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


# -- applying a pair's transform ----------------------------------------------------------------


def hf_to_megatron(transform: Transform, tensors: Sequence[torch.Tensor], cfg: Qwen3Config) -> torch.Tensor:
    """HF tensor(s) of one pair -> the full (TP=1) megatron tensor of that pair."""
    return transform.rule.to_megatron(tensors, cfg)


def megatron_to_hf(transform: Transform, tensor: torch.Tensor, cfg: Qwen3Config) -> list[torch.Tensor]:
    """The full megatron tensor of one pair -> its HF tensor(s), in table order (contiguous)."""
    return transform.rule.to_hf(tensor, cfg)


def megatron_shape(pair: Pair, hf_shapes: Sequence[Shape]) -> Shape:
    """Shape of the megatron tensor a pair makes (per layer, without the layer axis)."""
    return pair.transform.rule.megatron_shape(hf_shapes)


def megatron_modules(table: Sequence[Mapping] = QWEN3) -> set[str]:
    """The top-level GPTModel modules the table maps (`embedding`, `decoder`, ...): every checkpoint
    tensor under one of them is a model tensor that some row must cover."""
    return {row.megatron.split(".")[0] for row in table}


def iter_hf_names(pairs: Sequence[Pair]) -> Iterator[str]:
    for p in pairs:
        yield from p.hf
