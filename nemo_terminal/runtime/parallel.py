"""The parallel layout: one object with tp/pp/vpp/cp/dp, validated before any compute."""



from dataclasses import dataclass
from typing import Optional

from nemo_terminal.errors import UserError


@dataclass
class ParallelConfig:
    """How the model is split across ranks. dp is derived: world / (tp·pp·cp)."""

    tp: int = 1
    """Tensor parallel size. At most the number of KV groups (8 for Qwen3)."""
    pp: int = 1
    """Pipeline parallel size. Must divide the layer count (times vpp)."""
    vpp: Optional[int] = None
    """Virtual pipeline stages per rank (interleaved 1F1B). None disables it."""
    cp: int = 1
    """Context parallel size: each document is split zigzag over cp ranks."""
    sequence_parallel: bool = False
    """Shard LayerNorm/dropout activations over TP; needs tp > 1 to matter."""

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "cp"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"parallel.{name} must be >= 1, got {getattr(self, name)}")
        if self.vpp is not None and (self.vpp < 1 or self.pp < 2):
            raise UserError(f"parallel.vpp={self.vpp} needs parallel.pp >= 2 and vpp >= 1; set vpp=null")
        if self.sequence_parallel and self.tp == 1:
            self.sequence_parallel = False  # a no-op at tp=1; megatron would reject it

    @property
    def model_parallel_size(self) -> int:
        return self.tp * self.pp * self.cp

    def dp(self, world_size: int) -> int:
        if world_size % self.model_parallel_size:
            raise UserError(
                f"world size {world_size} is not divisible by tp*pp*cp = "
                f"{self.tp}*{self.pp}*{self.cp}; change the layout or the number of processes"
            )
        return world_size // self.model_parallel_size

    def check_model(self, num_layers: int, num_heads: int, num_kv_heads: int) -> None:
        """Raise before any compute if this layout cannot split the model."""
        if num_kv_heads % self.tp:
            raise UserError(
                f"parallel.tp={self.tp} does not divide the {num_kv_heads} KV groups; "
                f"use tp in {[d for d in range(1, num_kv_heads + 1) if num_kv_heads % d == 0]}"
            )
        if num_heads % self.tp:
            raise UserError(f"parallel.tp={self.tp} does not divide the {num_heads} attention heads")
        stages = self.pp * (self.vpp or 1)
        if num_layers % stages:
            raise UserError(
                f"parallel.pp={self.pp} x vpp={self.vpp or 1} does not divide the {num_layers} layers"
            )

    def pad_multiple(self) -> int:
        """Per-document length multiple that CP zigzag and SP need: lcm(2·cp, cp·tp if SP)."""
        import math

        base = 2 * self.cp if self.cp > 1 else 1
        if self.sequence_parallel:
            return math.lcm(base, self.cp * self.tp)
        return base
