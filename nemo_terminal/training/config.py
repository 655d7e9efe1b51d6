"""The one training config schema: small typed parts composed into `Config`.

Each part validates itself in `__post_init__`; `load_config` merges a YAML
recipe and `key=value` overrides through omegaconf, so a typo'd key or a
wrong type fails before any process group or model exists.
"""



from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from nemo_terminal.configuration import load_structured
from nemo_terminal.data.loader.config import DataConfig
from nemo_terminal.errors import UserError
from nemo_terminal.runtime.parallel import ParallelConfig

PRECISIONS = ("bf16", "fp32")
RECOMPUTE = ("none", "selective", "full")


@dataclass
class ModelConfig:
    """Where the weights come from and how attention runs."""

    megatron_dir: Optional[str] = None
    """A checkpoint written by `nemo-terminal import` (or a previous training run)."""
    hf_dir: Optional[str] = None
    """A Hugging Face Qwen3 directory, imported on the fly into run_dir/imported."""
    attention_backend: str = "auto"
    """auto | te | torch | local. auto = te where Transformer Engine runs, else torch."""
    yarn_factor: Optional[float] = None
    """YaRN rope scaling factor for contexts beyond 40K (e.g. 2.0 for 64K). None = plain RoPE."""
    yarn_original_max_position: int = 32768
    """The context length the base model's RoPE was trained at; YaRN stretches from it."""

    def __post_init__(self) -> None:
        if self.attention_backend not in ("auto", "te", "torch", "local"):
            raise UserError(f"model.attention_backend must be auto|te|torch|local, got {self.attention_backend!r}")
        if self.yarn_factor is not None and self.yarn_factor <= 1.0:
            raise UserError(f"model.yarn_factor must be > 1 (got {self.yarn_factor}); use null to disable YaRN")


@dataclass
class TrainConfig:
    """Optimization. Defaults are the paper's (arXiv 2602.21193, FACTS.md §2)."""

    global_batch_size: int = 128
    """Packed bins per optimizer step, across all data-parallel ranks."""
    micro_batch_size: int = 1
    """Bins per forward pass; concatenated into one packed THD sequence."""
    max_steps: Optional[int] = None
    """Optimizer steps. When set it wins over epochs."""
    epochs: float = 2.0
    """Passes over the training bins (paper: 2)."""
    lr: float = 2e-5
    min_lr: float = 0.0
    """Floor of the cosine decay."""
    warmup_fraction: float = 0.1
    """Fraction of total steps with linear warm-up from 0."""
    weight_decay: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    """Global gradient-norm clip; 0 disables."""
    seed: int = 1234
    precision: str = "bf16"
    """bf16 (bf16 weights, fp32 master weights and grads reduction) | fp32 (CPU tests)."""
    recompute: str = "none"
    """none | selective (attention core) | full (every layer's activations) — trades compute for memory."""
    eval_interval: int = 0
    """Validation loss (data.val_fraction / data.val_path) every N steps and after the last; 0 = only
    after the last step, when a validation set exists."""
    max_consecutive_skips: int = 5
    """Steps with NaN/Inf loss or grad norm are skipped; this many in a row stops the run."""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.recompute not in RECOMPUTE:
            raise UserError(f"train.recompute must be one of {RECOMPUTE}, got {self.recompute!r}")
        if self.global_batch_size < 1 or self.micro_batch_size < 1:
            raise UserError("train.global_batch_size and train.micro_batch_size must be >= 1")
        if self.max_steps is None and self.epochs <= 0:
            raise UserError("set train.max_steps or a positive train.epochs")
        if not 0 <= self.warmup_fraction < 1:
            raise UserError(f"train.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.eval_interval < 0:
            raise UserError(f"train.eval_interval must be >= 0, got {self.eval_interval}")
        if self.min_lr > self.lr:
            raise UserError(f"train.min_lr={self.min_lr} is above train.lr={self.lr}")

    def micro_batches_per_step(self, dp: int) -> int:
        per_rank = self.micro_batch_size * dp
        if self.global_batch_size % per_rank:
            raise UserError(
                f"train.global_batch_size={self.global_batch_size} is not divisible by "
                f"micro_batch_size*dp = {self.micro_batch_size}*{dp}"
            )
        return self.global_batch_size // per_rank


@dataclass
class CheckpointConfig:
    save_interval: int = 0
    """Save every N steps; 0 saves only at the end."""
    save_final: bool = True
    """Also save after the last step (whatever save_interval says)."""
    keep_last: int = 2
    """Older checkpoints are deleted once a newer one is complete."""
    resume: str = "auto"
    """auto (continue from run_dir's latest, if any) | never | a checkpoint directory."""
    fully_reshardable: bool = False
    """Save optimizer state so that a resume may change TP/PP (gathers it on DP rank 0 at save:
    slower and memory-hungry at scale). Off: resume keeps TP/PP but may change DP. Model weights
    load at any TP/PP either way (model.megatron_dir=<a run_dir> starts a new run from them).
    Needs TE's or apex's fused Adam (megatron-core 0.16 cannot load it into torch.optim.AdamW)."""

    def __post_init__(self) -> None:
        if self.save_interval < 0 or self.keep_last < 1:
            raise UserError("checkpoint.save_interval must be >= 0 and checkpoint.keep_last >= 1")


@dataclass
class LogConfig:
    interval: int = 1
    """Rank 0 prints a line every N steps (metrics.jsonl gets every step)."""
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "nemo-terminal"


@dataclass
class Config:
    run_dir: str = "runs/default"
    """Checkpoints, metrics.jsonl and the resolved config.yaml go here."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)


def load_config(path: "Optional[str | Path]" = None, overrides: Optional[list[str]] = None) -> Config:
    """YAML recipe + `key=value` overrides -> validated Config."""
    cfg = load_structured(Config, path, overrides)
    if bool(cfg.model.megatron_dir) == bool(cfg.model.hf_dir):
        raise UserError("set exactly one of model.megatron_dir (from `nemo-terminal import`) or model.hf_dir")
    return cfg


def to_yaml(cfg: Config) -> str:
    """The resolved config as saved next to checkpoints."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))

