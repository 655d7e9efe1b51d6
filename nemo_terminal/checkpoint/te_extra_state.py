"""Transformer Engine `_extra_state` entries for checkpoints written without TE.

A TE-spec GPTModel (Megatron-LM, Megatron-Bridge, NGC containers, our own GPU runs) asks the
checkpoint for one `_extra_state` object per TE module: megatron-core's
`make_sharded_object_for_checkpoint` turns each into a ShardedObject, stacked over layers
(`decoder.layers.<module>._extra_state/shard_<layer>_<num_layers>`). Under dist_checkpointing's
default strictness (`assume_ok_unexpected`) a requested object that the checkpoint lacks fails
the load, so a checkpoint written on CPU with megatron-core's local spec (which has extra state
only on its linear layers) would not load there. We write the missing ones with the value
`None`, which every TE version's `set_extra_state` takes as "no FP8 metadata" (the same thing
the local linear layers already store). Writing a superset is safe: a loader never asks for
more than its own modules, and unrequested objects are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from megatron.core.dist_checkpointing.mapping import ShardedObject

from nemo_terminal.models.qwen3 import Qwen3Config

# TE modules of megatron-core's `get_gpt_layer_with_transformer_engine_spec(qk_layernorm=True)`:
# TELayerNormColumnParallelLinear (linear_qkv, linear_fc1), TERowParallelLinear (linear_proj,
# linear_fc2), TEDotProductAttention (core_attention: extra state up to megatron-core 0.12),
# TENorm = te.pytorch.RMSNorm (q/k_layernorm, and the block's final_layernorm), whose
# ops-based implementation (TE 2.x) carries extra state too.
LAYER_MODULES = (
    "self_attention.linear_qkv", "self_attention.core_attention", "self_attention.linear_proj",
    "self_attention.q_layernorm", "self_attention.k_layernorm", "mlp.linear_fc1", "mlp.linear_fc2",
)
BLOCK_MODULES = ("decoder.final_layernorm",)


def te_extra_state_keys(cfg: Qwen3Config) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(key, global_shape, global_offset) of every TE `_extra_state` object of the whole model."""
    n = cfg.num_hidden_layers
    out = [(f"decoder.layers.{m}._extra_state", (n,), (i,)) for m in LAYER_MODULES for i in range(n)]
    out += [(f"{m}._extra_state", (1,), (0,)) for m in BLOCK_MODULES]
    return out


def missing_extra_state(cfg: Qwen3Config, present: Iterable[Any]) -> dict[str, Any]:
    """ShardedObjects (value None, main replica) for the TE `_extra_state` keys that `present`
    (the ShardedObjects about to be saved, or their keys) has none of, keyed by unique key.

    Decided by key, not by shard, so every pipeline stage of a local-spec model reaches the same
    answer; a TE-spec model (every layer key present) gets nothing added, since it writes its own.
    Add the result to the state of exactly one rank (they are main replicas)."""
    have = {getattr(p, "key", p) for p in present}
    if all(f"decoder.layers.{m}._extra_state" in have for m in LAYER_MODULES):
        return {}
    out = {}
    for key, shape, offset in te_extra_state_keys(cfg):
        if key not in have:
            obj = ShardedObject(key, None, shape, offset, replica_id=0)
            out[obj.unique_key] = obj
    return out
