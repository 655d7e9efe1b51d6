"""The speed settings Megatron-Bridge turns on, each where it is supported here and off elsewhere.

`train.*` fields ask for them (all default on); `resolve` decides what the run can use, from the
device, the resolved attention backend and the model, and says why it dropped any. Nothing here
changes the numbers a step computes, except within floating-point reassociation (the fused wgrad
GEMM accumulates in a different order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Performance:
    """What the trainer passes to megatron-core, and the reasons for each setting left off."""

    transformer: dict[str, Any]
    """TransformerConfig keyword arguments (to_transformer_config overrides)."""
    ddp: dict[str, Any]
    """DistributedDataParallelConfig keyword arguments."""
    padded_only_cu_seqlens: bool
    """Give attention only the padded document offsets (data/loader/batches.py packed_seq_params)."""
    dropped: list[str] = field(default_factory=list)


def resolve(train, *, accelerator: bool, backend: str, yarn: bool, cp: int, dp_cp: int) -> Performance:
    """train: TrainConfig; backend: the resolved attention backend (te | torch | local);
    yarn: the model uses YaRN rope scaling; dp_cp: the size of the DP×CP gradient-reduce group."""
    dropped: list[str] = []

    def want(name: str, supported: bool, why: str) -> bool:
        asked = bool(getattr(train, name))
        if asked and not supported:
            dropped.append(f"train.{name} off: {why}")
        return asked and supported

    te = backend == "te"
    transformer = {
        # Every rank builds only its own shard, on its GPU; the checkpoint overwrites it anyway. The CPU
        # path builds full fp32 matrices and splits them (minutes at 8B+), which CPU runs need.
        "use_cpu_initialization": not want("gpu_initialization", accelerator, "needs a GPU"),
        # TE's linear layers accumulate weight gradients straight into megatron's fp32 main_grad.
        "gradient_accumulation_fusion": want("gradient_accumulation_fusion", te,
                                             "needs the Transformer Engine layer spec (attention_backend te)"),
        # TE's fused THD RoPE drops megatron's YaRN mscale (rope_utils.apply_rotary_pos_emb): with YaRN
        # it would silently rotate by the wrong magnitude, so it stays unfused there.
        "apply_rope_fusion": want("rope_fusion", te and not yarn,
                                  "needs Transformer Engine, and TE's fused THD RoPE ignores YaRN's mscale"
                                  if te else "needs the Transformer Engine layer spec (attention_backend te)"),
    }
    ddp = {
        "overlap_grad_reduce": want("overlap_grad_reduce", dp_cp > 1, "nothing to reduce at DP x CP = 1"),
        "overlap_param_gather": want("overlap_param_gather", dp_cp > 1, "nothing to gather at DP x CP = 1"),
    }
    padded_only = want("padded_only_cu_seqlens", cp == 1,
                       "context parallelism splits documents at their padded boundaries")
    return Performance(transformer=transformer, ddp=ddp, padded_only_cu_seqlens=padded_only, dropped=dropped)
