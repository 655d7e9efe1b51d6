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
    if with_params:  # gradients of the last step, still in megatron's grad buffers (fp32, DP-reduced)
        out["grads"] = {
            name: p.main_grad.detach().clone() for chunk in trainer.model for name, p in chunk.module.named_parameters()
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


def packed_vs_unpacked(overrides: list[str]) -> dict:
    """Loss of packed bins via the trainer's forward step vs each document run alone, unpacked.

    The reference never sees packing: each document is its own sequence with
    plain causal attention (no packed_seq_params) and positions 0..L-1.
    """
    import torch
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from nemo_terminal.training.config import load_config
    from nemo_terminal.training.trainer import Trainer, _forward_step

    trainer = Trainer(load_config(RECIPE, overrides)).setup()
    model = trainer.model[0]
    micro = [next(iter(trainer.data.train_dataloader()))]
    batch = micro[0]
    with torch.no_grad():
        reports = get_forward_backward_func()(
            forward_step_func=_forward_step, data_iterator=iter(micro), model=[model], num_microbatches=1,
            seq_length=batch["tokens"].shape[1], micro_batch_size=1, forward_only=True,
        )
    packed_sum, packed_count = (float(x) for x in reports[0]["lm loss"])

    tokens = batch["tokens"][0]
    labels, mask = batch["labels"][0], batch["loss_mask"][0]
    cu, cu_pad = batch["cu_seqlens"].tolist(), batch["cu_seqlens_padded"].tolist()
    doc_sum, doc_count = 0.0, 0.0
    with torch.no_grad():
        for i in range(len(cu) - 1):
            start, length = cu_pad[i], cu[i + 1] - cu[i]
            sl = slice(start, start + length)
            losses = model.module(tokens[sl][None], torch.arange(length)[None], None, labels=labels[sl][None])
            doc_sum += float((losses[0].float() * mask[sl]).sum())
            doc_count += float(mask[sl].sum())
    return {"packed": packed_sum / packed_count, "unpacked": doc_sum / doc_count,
            "docs": len(cu) - 1, "packed_count": packed_count, "doc_count": doc_count}
