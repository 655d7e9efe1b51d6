"""Module-level training runs for `run_distributed` (spawned processes import them by name).

Several runs share one spawn: megatron's model-parallel state is rebuilt per
run, which saves the ~10 s of process start and imports per layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "configs" / "tiny_cpu.yaml"


def base_overrides(inputs: dict, run_dir: Path, data: str = "data", **extra: Any) -> list[str]:
    cfg = {
        "run_dir": str(run_dir), "model.megatron_dir": str(inputs["megatron"]), "data.path": str(inputs[data]),
        "train.global_batch_size": 4, "train.micro_batch_size": 1, "train.max_steps": 4,
        "train.lr": 1e-3, "checkpoint.save_interval": 0, "checkpoint.save_final": False,
        "checkpoint.resume": "never",
    }
    cfg.update(extra)
    return [f"{k}={v}" for k, v in cfg.items()]


def train_history(overrides: list[str], with_params: bool = False) -> dict:
    """Run the real Trainer; return per-step metrics and (optionally) the final full parameters."""
    from nemo_terminal.training.config import load_config
    from nemo_terminal.training.trainer import Trainer

    trainer = Trainer(load_config(RECIPE, overrides)).setup()
    history = trainer.train()
    out: dict = {"history": [{k: r[k] for k in ("loss", "grad_norm", "loss_tokens", "lr", "skipped")} for r in history]}
    if with_params:
        out["params"] = {
            name: p.detach().clone() for chunk in trainer.model for name, p in chunk.module.named_parameters()
        }
    return out


def train_many(runs: dict[str, list[str]], with_params: tuple[str, ...] = ()) -> dict[str, dict]:
    return {name: train_history(overrides, name in with_params) for name, overrides in runs.items()}


def setup_errors(runs: dict[str, list[str]]) -> dict[str, str]:
    """Each run's UserError message from Trainer.setup() (or 'no error')."""
    from nemo_terminal.errors import UserError
    from nemo_terminal.training.config import load_config
    from nemo_terminal.training.trainer import Trainer

    out = {}
    for name, overrides in runs.items():
        try:
            Trainer(load_config(RECIPE, overrides)).setup()
            out[name] = "no error"
        except UserError as err:
            out[name] = str(err)
    return out
