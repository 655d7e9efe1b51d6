"""GPU checks of attention_backend="torch": its CUDA kernels vs the CPU reference, and vs TE.

Skipped without CUDA (conftest). Never run when this was written (no GPU was lent): treat a
first failure as a finding about the code, not the test. Tolerances: fp32 CUDA vs fp32 CPU
1e-4 (TF32 off); bf16 vs fp32 reference 3e-2 (bf16 has 8 mantissa bits; values are O(1)).
"""

from __future__ import annotations

import math

import pytest
import torch

from nemo_terminal.models.attention import (
    attend_segments,
    flex_attend,
    packed_attention,
    reference_segment,
    sdpa_segment,
)
from nemo_terminal.models.attention_cp import build_segment_table
from nemo_terminal.testing import run_distributed

pytestmark = pytest.mark.gpu

# Realistic-ish: several documents of uneven length, one needing no padding, padded to 2·cp = 4.
LENS = [100, 333, 57, 212]
PADDED = [100, 336, 60, 216]
CU = [0, *torch.tensor(LENS).cumsum(0).tolist()]
CU_PADDED = [0, *torch.tensor(PADDED).cumsum(0).tolist()]
HEADS, GROUPS, DIM = 4, 2, 64  # flex needs head_dim >= 16; GQA with 2 heads per group
SCALE = 1.0 / math.sqrt(DIM)


def _qkv(seed: int):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(CU_PADDED[-1], n, DIM, generator=gen) for n in (HEADS, GROUPS, GROUPS)]


def _run(fn, q, k, v, rows, weight):
    q, k, v = (x.clone().requires_grad_() for x in (q, k, v))
    out = fn(q[rows], k, v)
    grads = torch.autograd.grad((out.float() * weight).sum(), (q, k, v))
    return [out.float().cpu()] + [g.float().cpu() for g in grads]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kernel", ["sdpa", "flex"])
@pytest.mark.parametrize("cp", [1, 2])
def test_cuda_kernel_matches_cpu_reference(kernel, cp, dtype):
    torch.backends.cuda.matmul.allow_tf32 = False
    q, k, v = _qkv(0)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    for rank in range(cp):
        table = build_segment_table(torch.tensor(CU), torch.tensor(CU_PADDED), CU_PADDED[-1] // cp, cp, rank)
        rows = table.local_positions
        weight = torch.randn(len(rows), HEADS, DIM, generator=torch.Generator().manual_seed(rank))
        ref = _run(lambda a, b, c, table=table: attend_segments(a, b, c, table, SCALE, reference_segment),
                   q, k, v, rows, weight)
        if kernel == "sdpa":
            fn = lambda a, b, c, table=table: attend_segments(a, b, c, table, SCALE, sdpa_segment)  # noqa: E731
        else:
            fn = lambda a, b, c, table=table: flex_attend(a, b, c, table, SCALE)  # noqa: E731
        got = _run(fn, *(x.cuda().to(dtype) for x in (q, k, v)), rows.cuda(), weight.cuda())
        for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref, strict=False):
            torch.testing.assert_close(
                a, b, atol=tol, rtol=tol,
                msg=lambda m, rank=rank, name=name: f"{kernel} cp={cp} rank={rank} {name}: {m}",
            )


def _te_attention():
    te = pytest.importorskip("transformer_engine.pytorch")
    return te.DotProductAttention(HEADS, DIM, num_gqa_groups=GROUPS, attention_dropout=0.0, qkv_format="thd",
                                  attn_mask_type="padding_causal", softmax_scale=SCALE)


def _te_forward(attn, q, k, v):
    cu = torch.tensor(CU, dtype=torch.int32, device="cuda")
    cu_padded = torch.tensor(CU_PADDED, dtype=torch.int32, device="cuda")
    return attn(q, k, v, cu_seqlens_q=cu, cu_seqlens_kv=cu, cu_seqlens_q_padded=cu_padded,
                cu_seqlens_kv_padded=cu_padded, max_seqlen_q=max(PADDED), max_seqlen_kv=max(PADDED))


def _real_rows(table) -> torch.Tensor:
    _, _, real = table.token_doc_and_offset(table.local_positions.numpy())
    return torch.from_numpy(real)


def test_te_matches_torch_cp1():
    """TE's THD attention vs ours (auto kernel on CUDA), bf16, on real (unpadded) rows."""
    attn = _te_attention()
    q, k, v = (x.cuda().bfloat16() for x in _qkv(1))
    table = build_segment_table(torch.tensor(CU), torch.tensor(CU_PADDED), CU_PADDED[-1])
    ours = packed_attention(q, k, v, table, SCALE).reshape(q.shape[0], -1)
    theirs = _te_forward(attn, q, k, v)
    real = _real_rows(table).cuda()
    torch.testing.assert_close(theirs[real].float(), ours[real].float(), atol=3e-2, rtol=3e-2)


def te_cp2_run() -> float:
    """One rank of CP=2 on two GPUs: our all-gather CP vs TE's p2p CP on the same zigzag shares."""
    import torch.distributed as dist

    attn = _te_attention()
    group = dist.new_group([0, 1])
    attn.set_context_parallel_group(group, [0, 1], torch.cuda.Stream(), cp_comm_type="p2p")
    rank = dist.get_rank()
    table = build_segment_table(torch.tensor(CU), torch.tensor(CU_PADDED), CU_PADDED[-1] // 2, 2, rank)
    rows = table.local_positions.cuda()
    q, k, v = (x.cuda().bfloat16()[rows] for x in _qkv(2))
    ours = packed_attention(q, k, v, table, SCALE, cp_group=group).reshape(q.shape[0], -1)
    theirs = _te_forward(attn, q, k, v)
    real = _real_rows(table).cuda()
    return float((theirs[real].float() - ours[real].float()).abs().max())


def test_te_matches_torch_cp2():
    pytest.importorskip("transformer_engine.pytorch")
    if torch.cuda.device_count() < 2:
        pytest.skip("CP=2 against TE needs two GPUs (NCCL cannot put two ranks on one device)")
    errors = run_distributed(te_cp2_run, world_size=2)
    assert max(errors) <= 3e-2, errors
