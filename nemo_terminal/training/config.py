"""The one training config schema: small typed parts composed into `Config`.

Each part validates itself in `__post_init__`; `load_config` merges a YAML
recipe and `key=value` overrides through omegaconf, so a typo'd key or a
wrong type fails before any process group or model exists.
"""

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from nemo_terminal.configuration import load_structured
from nemo_terminal.data.loader.config import DataConfig
from nemo_terminal.errors import UserError
from nemo_terminal.models.qwen3 import qwen3_size
from nemo_terminal.options import AttentionBackend, Precision, Recompute, check_int, check_number
from nemo_terminal.output_dir import CHECKPOINT, check_output
from nemo_terminal.runtime.parallel import ParallelConfig, micro_batches_per_step


@dataclass
class ModelConfig:
    """Where the weights come from and how attention runs."""

    megatron_dir: str | None = None
    """A checkpoint written by `nemo-terminal import` (or a previous training run)."""
    hf_dir: str | None = None
    """A Hugging Face Qwen3 directory, imported on the fly into run_dir/imported."""
    tokenizer: str | None = None
    """HF tokenizer directory, for a Megatron-LM/Bridge checkpoint in megatron_dir that has none inside."""
    size: str | None = None
    """The Qwen3 size the recipe is written for (0.6b 1.7b 4b 8b 14b 32b). Only `plan` reads it, to
    estimate memory before a checkpoint exists; a checkpoint's model_config.json wins and must agree."""
    attention_backend: AttentionBackend = AttentionBackend.auto
    """auto | te | torch | local. auto = te where Transformer Engine runs, else torch."""
    yarn_factor: float | None = None
    """YaRN rope scaling factor for contexts beyond 40K (e.g. 2.0 for 64K). None = plain RoPE."""
    yarn_original_max_position: int = 32768
    """The context length the base model's RoPE was trained at; YaRN stretches from it."""

    def __post_init__(self) -> None:
        self.attention_backend = AttentionBackend.parse(self.attention_backend, "model.attention_backend")
        if self.size is not None:
            try:
                qwen3_size(self.size)
            except UserError as err:
                raise UserError(f"model.size: {err}") from None
        if self.yarn_factor is not None and not (math.isfinite(self.yarn_factor) and self.yarn_factor > 1.0):
            raise UserError(f"model.yarn_factor must be a finite number > 1 (got {self.yarn_factor}); "
                            "use null to disable YaRN")
        check_int("model.yarn_original_max_position", self.yarn_original_max_position, 1)


@dataclass
class TrainConfig:
    """Optimization. Defaults are the paper's (arXiv 2602.21193, FACTS.md §2)."""

    global_batch_size: int = 128
    """Packed bins per optimizer step, across all data-parallel ranks."""
    micro_batch_size: int = 1
    """Bins per forward pass; concatenated into one packed THD sequence."""
    max_steps: int | None = None
    """Optimizer steps. When set it wins over epochs."""
    epochs: float = 2.0
    """Passes over the training bins (paper: 2)."""
    lr: float = 2e-5
    """Peak learning rate, reached after warm-up (paper: 2e-5)."""
    min_lr: float = 0.0
    """Floor of the cosine decay."""
    warmup_fraction: float = 0.1
    """Fraction of total steps with linear warm-up from 0."""
    weight_decay: float = 1e-4
    """AdamW decoupled weight decay (paper: 1e-4)."""
    adam_beta1: float = 0.9
    """AdamW first-moment decay, in [0, 1) (paper: 0.9)."""
    adam_beta2: float = 0.95
    """AdamW second-moment decay, in [0, 1) (paper: 0.95)."""
    adam_eps: float = 1e-8
    """AdamW denominator epsilon, > 0."""
    clip_grad: float = 1.0
    """Global gradient-norm clip; 0 disables."""
    seed: int = 1234
    """Seeds megatron's model-parallel RNG (initialization, dropout); the data order has data.seed."""
    precision: Precision = Precision.bf16
    """bf16 (bf16 weights, fp32 master weights and grads reduction) | fp32 (CPU tests)."""
    recompute: Recompute = Recompute.none
    """none | selective (attention core) | full (every layer's activations) — trades compute for memory."""
    eval_interval: int = 0
    """Validation loss (data.val_fraction / data.val_path) every N steps and after the last; 0 = only
    after the last step, when a validation set exists."""
    max_consecutive_skips: int = 5
    """Steps with NaN/Inf loss or grad norm are skipped; this many in a row stops the run."""
    # Speed settings as Megatron-Bridge uses them. Each is used only where it is supported, and the
    # run logs any it leaves off and why (nemo_terminal/training/performance.py); none changes the result.
    gpu_initialization: bool = True
    """Build each rank's weight shards on its GPU before the checkpoint overwrites them (CPU: never).
    false = megatron's use_cpu_initialization: full fp32 matrices on the CPU, minutes at 8B+."""
    gradient_accumulation_fusion: bool = True
    """TE linears accumulate weight gradients straight into the fp32 main_grad (TE backend only)."""
    rope_fusion: bool = True
    """TE's fused THD RoPE (TE backend only; off with YaRN, whose mscale TE's kernel ignores)."""
    overlap_grad_reduce: bool = True
    """Reduce-scatter gradient buckets during the backward pass (when DP x CP > 1)."""
    overlap_param_gather: bool = True
    """All-gather updated parameters during the next forward (DP x CP > 1); a save gathers them first."""
    padded_only_cu_seqlens: bool = True
    """At CP 1, give attention each document's padded span as the document (its padding trails it
    and has no loss), so TE runs its plain THD kernel instead of the padded one."""

    def __post_init__(self) -> None:
        self.precision = Precision.parse(self.precision, "train.precision")
        self.recompute = Recompute.parse(self.recompute, "train.recompute")
        check_int("train.global_batch_size", self.global_batch_size, 1)
        check_int("train.micro_batch_size", self.micro_batch_size, 1)
        check_int("train.max_steps", self.max_steps, 1, "set null to train for train.epochs", optional=True)
        check_number("train.epochs", self.epochs, low=0, low_open=True, fix="or set train.max_steps")
        check_number("train.lr", self.lr, low=0, low_open=True, fix="the paper used 2e-5")
        check_number("train.min_lr", self.min_lr, low=0, high=self.lr, fix="the cosine floor, at most train.lr")
        check_number("train.warmup_fraction", self.warmup_fraction, low=0, high=1, high_open=True)
        check_number("train.weight_decay", self.weight_decay, low=0, fix="0 disables weight decay")
        for name in ("adam_beta1", "adam_beta2"):
            check_number(f"train.{name}", getattr(self, name), low=0, high=1, high_open=True)
        check_number("train.adam_eps", self.adam_eps, low=0, low_open=True)
        check_number("train.clip_grad", self.clip_grad, low=0, fix="0 disables clipping")
        check_int("train.seed", self.seed, 0)
        check_int("train.eval_interval", self.eval_interval, 0, "0 evaluates after the last step only")
        check_int("train.max_consecutive_skips", self.max_consecutive_skips, 1)
        for name in ("gpu_initialization", "gradient_accumulation_fusion", "rope_fusion", "overlap_grad_reduce",
                     "overlap_param_gather", "padded_only_cu_seqlens"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"train.{name} must be true or false, got {getattr(self, name)!r}")

    def micro_batches_per_step(self, dp: int) -> int:
        return micro_batches_per_step(self.global_batch_size, self.micro_batch_size, dp)


@dataclass
class CheckpointConfig:
    """When to save, how many to keep, where to resume from."""

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
    verify_hashes: bool = True
    """Check every file's content hash (recorded at save) before loading a checkpoint; false skips
    the hashing (sizes and the restricted unpickler are still checked). See docs/reliability.md."""

    def __post_init__(self) -> None:
        check_int("checkpoint.save_interval", self.save_interval, 0, "0 saves only at the end")
        check_int("checkpoint.keep_last", self.keep_last, 1)
        if not self.resume:
            raise UserError("checkpoint.resume is empty; use auto, never or a checkpoint directory")


@dataclass
class LogConfig:
    """What a run reports besides metrics.jsonl."""

    interval: int = 1
    """Rank 0 prints a line every N steps (metrics.jsonl gets every step)."""
    tensorboard: bool = False
    """Also write TensorBoard scalars under run_dir/tensorboard."""
    wandb: bool = False
    """Also log to Weights & Biases (needs `wandb` installed and logged in)."""
    wandb_project: str = "nemo-terminal"
    """The W&B project runs are logged to."""

    def __post_init__(self) -> None:
        check_int("log.interval", self.interval, 1, "1 prints every step")


@dataclass
class Config:
    """A training run: where it writes, and the parts above."""

    run_dir: str = "runs/default"
    """Checkpoints, metrics.jsonl and the resolved config.yaml go here."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Weights and attention."""
    data: DataConfig = field(default_factory=DataConfig)
    """Prepared datasets, mixture, curriculum, validation."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """TP/PP/VPP/CP layout; dp is the rest of the world size."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimization."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Saving, pruning and resuming."""
    log: LogConfig = field(default_factory=LogConfig)
    """Console, TensorBoard and W&B reporting."""


def load_config(path: "str | Path | None" = None, overrides: list[str] | None = None) -> Config:
    """YAML recipe + `key=value` overrides -> validated Config."""
    cfg = load_structured(Config, path, overrides)
    if bool(cfg.model.megatron_dir) == bool(cfg.model.hf_dir):
        raise UserError("set exactly one of model.megatron_dir (from `nemo-terminal import`) or model.hf_dir")
    return cfg


def check_run_paths(cfg: Config) -> None:
    """Before any work: the inputs exist, and run_dir is writable and apart from every input
    (pruning and the on-the-fly import write there)."""
    inputs = {"model.megatron_dir": cfg.model.megatron_dir, "model.hf_dir": cfg.model.hf_dir,
              "model.tokenizer": cfg.model.tokenizer, "data.path": cfg.data.path, "data.val_path": cfg.data.val_path}
    inputs.update({f"data.datasets[{i}].path": d.path for i, d in enumerate(cfg.data.datasets)})
    inputs.update({f"data.stages[{s}].datasets[{i}].path": d.path
                   for s, stage in enumerate(cfg.data.stages) for i, d in enumerate(stage.datasets)})
    for key, value in inputs.items():
        if value and not os.path.exists(value):
            raise UserError(f"{key}={value} does not exist; check the path")
    check_output(cfg.run_dir, CHECKPOINT, inputs=[v for v in inputs.values() if v], refuse_existing=False,
                 flag="run_dir")


def to_yaml(cfg: Config) -> str:
    """The resolved config as saved next to checkpoints."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))

