"""Per-token loss: Σ(token losses · mask) / (global count of loss tokens).

The local sum and count go to megatron-core's schedule, which adds the counts
over micro-batches; `finalize_model_grads` then all-reduces the count over
DP×CP and scales the summed gradients by its inverse. That is the global token
mean — never a mean of per-micro-batch means, which over-weights short batches.
"""

from __future__ import annotations

import torch


def masked_token_loss(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """loss_func for megatron's schedules with calculate_per_token_loss=True."""
    losses = output_tensor.float().reshape(-1)
    mask = loss_mask.float().reshape(-1)
    loss_sum = torch.sum(losses * mask)
    num_tokens = mask.sum().to(torch.int)
    report = torch.stack([loss_sum.detach(), mask.sum()])
    return loss_sum, num_tokens, {"lm loss": report}
