"""The real megatron-core path on CPU: TP=2 equals TP=1 through the pipeline schedule + distributed optimizer."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from nemo_terminal.testing import run_distributed

SHAPE = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
             head_dim=32, intermediate_size=128, tie_word_embeddings=False)


def _loss_func(mask, output):
    losses = output.float().reshape(-1) * mask.reshape(-1)
    return losses.sum(), mask.sum().to(torch.int), {"lm loss": torch.stack([losses.sum().detach(), mask.sum()])}


def _train_losses(tp: int, steps: int = 3) -> list[float]:
    """Build Qwen3-shaped GPTModel at this TP, train a few Adam steps, return the global losses."""
    import torch.distributed as dist
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from nemo_terminal.models.provider import build_gpt_model, to_transformer_config
    from nemo_terminal.models.qwen3 import Qwen3Config
    from nemo_terminal.runtime.distributed import init_parallel_state
    from nemo_terminal.runtime.parallel import ParallelConfig

    init_parallel_state(ParallelConfig(tp=tp), seed=7)
    cfg = Qwen3Config(**SHAPE)
    tcfg = to_transformer_config(cfg, tp=tp)
    tcfg.finalize_model_grads_func = finalize_model_grads
    torch.manual_seed(0)  # use_cpu_initialization: full weights from this seed, then split by TP
    model = build_gpt_model(cfg, tcfg, attention_backend="local")
    ddp = DistributedDataParallel(
        config=tcfg, module=model,
        ddp_config=DistributedDataParallelConfig(use_distributed_optimizer=True, grad_reduce_in_fp32=True),
    )
    opt = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=1e-3, use_distributed_optimizer=True, clip_grad=1.0), [ddp]
    )
    gen = torch.Generator().manual_seed(123)  # the same data on every rank
    micro = []
    for _ in range(2):
        tokens = torch.randint(0, 5000, (1, 32), generator=gen)
        mask = (torch.rand(1, 32, generator=gen) > 0.3).float()
        micro.append(dict(tokens=tokens, labels=torch.roll(tokens, -1, 1), mask=mask))
    losses = []
    for _ in range(steps):

        def step_fn(it, m):
            b = next(it)
            out = m(b["tokens"], torch.arange(32)[None], None, labels=b["labels"])
            return out, partial(_loss_func, b["mask"])

        ddp.zero_grad_buffer()
        opt.zero_grad()
        reports = get_forward_backward_func()(
            forward_step_func=step_fn, data_iterator=iter(micro), model=[ddp], num_microbatches=2,
            seq_length=32, micro_batch_size=1,
        )
        total = sum(r["lm loss"] for r in reports)
        dist.all_reduce(total)
        losses.append(float(total[0] / total[1]))
        ok, _, _ = opt.step()
        assert ok
    return losses


@pytest.mark.dist
def test_tp2_loss_equals_tp1():
    tp1 = run_distributed(_train_losses, world_size=2, tp=1)  # dp=2 on identical data == one device
    tp2 = run_distributed(_train_losses, world_size=2, tp=2)
    assert tp1[0] == tp1[1] and tp2[0] == tp2[1]
    for a, b in zip(tp1[0], tp2[0], strict=False):
        assert abs(a - b) <= 1e-5 * abs(a), (tp1[0], tp2[0])
    assert tp1[0][-1] < tp1[0][0]  # the optimizer really stepped (same batch every step)
