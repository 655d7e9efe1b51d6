"""The parallel layout: one object with tp/pp/vpp/cp/dp, validated before any compute."""



import math
from dataclasses import dataclass

from nemo_terminal.errors import UserError
from nemo_terminal.options import check_int
from nemo_terminal.runtime.pipeline_split import stage_layers


@dataclass
class ParallelConfig:
    """How the model is split across ranks. dp is derived: world / (tp·pp·cp)."""

    tp: int = 1
    """Tensor parallel size. At most the number of KV groups (8 for Qwen3)."""
    pp: int = 1
    """Pipeline parallel size. Must divide the layer count (times vpp), unless first_stage_layers /
    last_stage_layers take up the remainder."""
    vpp: int | None = None
    """Virtual pipeline stages per rank (interleaved 1F1B). None disables it."""
    cp: int = 1
    """Context parallel size: each document is split zigzag over cp ranks."""
    sequence_parallel: bool = False
    """Shard LayerNorm/dropout activations over TP; needs tp > 1 to matter."""
    first_stage_layers: int | None = None
    """Decoder layers on the first pipeline stage (megatron-core's num_layers_in_first_pipeline_stage);
    None splits evenly. For layer counts pp does not divide (28 layers at pp=8, 3 at pp=2) and to
    lighten the stage that also holds the embedding. A multiple of vpp."""
    last_stage_layers: int | None = None
    """Decoder layers on the last pipeline stage (num_layers_in_last_pipeline_stage), which also holds
    the output layer and loss; None splits evenly. The other stages split what is left evenly."""

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "cp"):
            check_int(f"parallel.{name}", getattr(self, name), 1)
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
        self.stage_layers(num_layers)

    def stage_layers(self, num_layers: int) -> list[int]:
        """Decoder layers on each pipeline rank; a UserError naming a working split if none."""
        return stage_layers(num_layers, self.pp, self.vpp, self.first_stage_layers, self.last_stage_layers)

    def pad_multiple(self) -> int:
        """Per-document length multiple that CP zigzag and SP need: lcm(2·cp, cp·tp if SP)."""
        base = 2 * self.cp if self.cp > 1 else 1
        if self.sequence_parallel:
            return math.lcm(base, self.cp * self.tp)
        return base


def micro_batches_per_step(global_batch_size: int, micro_batch_size: int, dp: int) -> int:
    """Micro-batches each DP rank runs per optimizer step; the one place the divisibility is checked."""
    per_rank = micro_batch_size * dp
    if micro_batch_size < 1 or dp < 1 or global_batch_size < 1 or global_batch_size % per_rank:
        raise UserError(
            f"train.global_batch_size={global_batch_size} is not divisible by "
            f"micro_batch_size*dp = {micro_batch_size}*{dp}; make it a multiple of {max(per_rank, 1)}"
        )
    return global_batch_size // per_rank
