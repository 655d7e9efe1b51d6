"""Module-level training runs for `run_distributed` (spawned processes import them by name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def base_overrides(inputs: dict, run_dir: Path, data: str = "data", **extra: Any) -> list[str]:
    cfg = {
        "run_dir": str(run_dir), "model.megatron_dir": str(inputs["megatron"]), "data.path": str(inputs[data]),
        "train.global_batch_size": 4, "train.micro_batch_size": 1, "train.max_steps": 4,
        "train.lr": 1e-3, "checkpoint.save_interval": 0, "checkpoint.resume": "never",
    }
    cfg.update(extra)
    return [f"{k}={v}" for k, v in cfg.items()]


def train_history(overrides: list[str], with_params: bool = False) -> dict:
    """Run the real Trainer; return per-step metrics and (optionally) the final full parameters."""
    from nemo_terminal.training.config import load_config
    from nemo_terminal.training.trainer import Trainer

    repo = Path(__file__).resolve().parents[3]
    trainer = Trainer(load_config(repo / "configs" / "tiny_cpu.yaml", overrides)).setup()
    history = trainer.train()
    out: dict = {"history": [{k: r[k] for k in ("loss", "grad_norm", "loss_tokens", "lr", "skipped")} for r in history]}
    if with_params:
        out["params"] = {
            name: p.detach().clone()
            for chunk in trainer.model for name, p in chunk.module.named_parameters()
        }
    return out
