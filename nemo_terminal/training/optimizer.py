"""The distributed optimizer and LR schedule, plus one fix for megatron-core's torch-Adam fallback."""

from __future__ import annotations

import math

import torch
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

from nemo_terminal.runtime import megatron_compat
from nemo_terminal.training.config import TrainConfig
from nemo_terminal.training.schedule import ReplannableScheduler


def build_optimizer(train: TrainConfig, tcfg, model_chunks: list):
    """megatron-core's distributed AdamW (fp32 master weights under bf16)."""
    opt_cfg = OptimizerConfig(
        optimizer="adam", lr=train.lr, min_lr=train.min_lr, weight_decay=train.weight_decay,
        adam_beta1=train.adam_beta1, adam_beta2=train.adam_beta2, adam_eps=train.adam_eps, clip_grad=train.clip_grad,
        bf16=train.precision == "bf16", params_dtype=tcfg.params_dtype, use_distributed_optimizer=True,
    )
    return get_megatron_optimizer(opt_cfg, model_chunks)


def build_scheduler(optimizer, train: TrainConfig, total_steps: int):
    """Linear warm-up from 0 over warmup_fraction of the steps, then cosine to min_lr."""
    warmup = int(round(train.warmup_fraction * total_steps))
    return ReplannableScheduler(
        optimizer, init_lr=0.0, max_lr=train.lr, min_lr=train.min_lr, lr_warmup_steps=warmup,
        lr_decay_steps=total_steps, lr_decay_style="cosine", start_wd=train.weight_decay,
        end_wd=train.weight_decay, wd_incr_steps=total_steps, wd_incr_style="constant",
    )


def step_if_finite(optimizer, clip_grad: float) -> float:
    """megatron-core's optimizer step, skipped when the global gradient norm is NaN/Inf.

    `optimizer.step()` would clip with a NaN norm (a no-op) and apply the NaN update; this does
    its steps in the same order (main grads, one global norm, clip by that norm, update) but
    checks the norm first, computing it once. Returns the norm.
    """
    norm = megatron_compat.prepare_and_norm(optimizer)
    if not math.isfinite(norm):
        return norm
    megatron_compat.clip_to_norm(optimizer, clip_grad, norm)
    megatron_compat.step_with_ready_grads(optimizer)
    return norm


def uses_torch_adam(optimizer) -> bool:
    return bool(megatron_compat.torch_adam_optimizers(optimizer))


def init_torch_adam_state(optimizer, updates: int = 0, overwrite_step: bool = False) -> None:
    """Keep torch.optim.AdamW's per-parameter 'step' right across a checkpoint load.

    Without TE/apex, megatron-core (0.16) falls back to torch.optim.AdamW. Its
    distributed-optimizer checkpoint code then (a) fails to build a load
    template because the state lacks 'step', and (b) restores exp_avg and
    exp_avg_sq but leaves 'step' at 0, which changes Adam's bias correction
    after a resume. Before the load we add placeholders; after it we set 'step'
    to the number of optimizer updates actually taken. TE/apex optimizers keep
    their step in the param groups and are untouched.
    """
    for inner in megatron_compat.torch_adam_optimizers(optimizer):
        for group in inner.param_groups:
            for p in group["params"]:
                st = inner.state[p]
                st.setdefault("exp_avg", torch.zeros_like(p.data))
                st.setdefault("exp_avg_sq", torch.zeros_like(p.data))
                if overwrite_step or "step" not in st:
                    st["step"] = torch.tensor(float(updates))
