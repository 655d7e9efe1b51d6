"""The LR schedule: linear warm-up, cosine to min_lr, re-planned when a resume changes the length.

A resume that changes `train.max_steps`/`epochs` keeps the LR continuous: the first resumed
step uses exactly the LR the saved schedule gives at the resume step S; from there a cosine
runs from that value down to min_lr at the new last step. (Resumed during warm-up, the
warm-up is unchanged and the cosine after it simply uses the new length.)
"""

from __future__ import annotations

import logging
import math

from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

log = logging.getLogger("nemo_terminal.train")


class ReplannableScheduler(OptimizerParamScheduler):
    """megatron-core's scheduler plus `replan`: (S, lr at S) when the run's length changed at S."""

    replan: tuple[int, float] | None = None

    def get_lr(self, param_group: dict) -> float:
        if self.replan is None or self.num_steps < self.replan[0]:
            return super().get_lr(param_group)
        start, start_lr = self.replan
        min_lr = param_group.get("min_lr", self.min_lr)
        span = self.lr_decay_steps - start
        ratio = 1.0 if span <= 0 else min(1.0, (self.num_steps - start) / span)
        return min_lr + (start_lr - min_lr) * 0.5 * (math.cos(math.pi * ratio) + 1.0)

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.replan is not None:
            state["replan"] = [int(self.replan[0]), float(self.replan[1])]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        replan = state_dict.get("replan")
        self.replan = (int(replan[0]), float(replan[1])) if replan else None
        super().load_state_dict(state_dict)

    def change_length(self, total_steps: int) -> None:
        """After loading a checkpoint: end the schedule at `total_steps` instead, LR continuous."""
        old = self.lr_decay_steps
        if total_steps == old:
            return
        group = self.optimizer.param_groups[0]
        lr_now = self.get_lr(group)
        self.lr_decay_steps = total_steps
        self.wd_incr_steps = total_steps
        if self.num_steps >= self.lr_warmup_steps:
            self.replan = (self.num_steps, lr_now)
        self.step(increment=0)
        log.info("run length changed from %d to %d steps at step %d: LR %.6g now, cosine to min_lr %.6g at step %d",
                 old, total_steps, self.num_steps, lr_now, self.min_lr, total_steps)
