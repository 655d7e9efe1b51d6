"""The torch attention kernels against a dense O(T²) oracle written independently (_attn_cases).

In-process, no megatron parallel state: CP is exercised by giving each rank's local query rows
(zigzag) the full keys, which is exactly what the all-gather delivers. fp32; tolerance 1e-5
absolute (values are O(1)).
"""

from __future__ import annotations

import pytest
import torch
from _attn_cases import CU, CU_PADDED, SCALE, inputs, oracle, oracle_mask

from nemo_terminal.models.attention import attend_segments, flex_attend, reference_segment, sdpa_segment
from nemo_terminal.models.attention_cp import build_segment_table, dense_mask

TOL = 1e-5


def _grads(out, wrt, weight):
    return torch.autograd.grad((out * weight).sum(), wrt)


def test_plan_mask_matches_oracle():
    table = build_segment_table(torch.tensor(CU), torch.tensor(CU_PADDED), CU_PADDED[-1])
    assert torch.equal(dense_mask(table), oracle_mask(CU, CU_PADDED))


@pytest.mark.parametrize("kernel", [reference_segment, sdpa_segment], ids=["reference", "sdpa"])
@pytest.mark.parametrize("cp", [1, 2])
def test_kernel_matches_dense_oracle(kernel, cp):
    """Values and q/k/v gradients, for every CP rank's zigzag share of the queries."""
    q, k, v = inputs()
    mask = oracle_mask(CU, CU_PADDED)
    expected = oracle(q, k, v, mask)
    weight = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1))
    exp_grads = _grads(expected, (q, k, v), weight)
    got_full = torch.zeros_like(expected)
    got_grads = [torch.zeros_like(x) for x in (q, k, v)]
    for rank in range(cp):
        table = build_segment_table(torch.tensor(CU), torch.tensor(CU_PADDED), CU_PADDED[-1] // cp, cp, rank)
        rows = table.local_positions
        out = attend_segments(q[rows], k, v, table, SCALE, kernel)
        got_full[rows] = out.detach()
        for acc, g in zip(got_grads, _grads(out, (q, k, v), weight[rows]), strict=False):
            acc += g  # what the reduce-scatter sums over ranks
    torch.testing.assert_close(got_full, expected.detach(), atol=TOL, rtol=0)
    for got, exp in zip(got_grads, exp_grads, strict=False):
        torch.testing.assert_close(got, exp, atol=TOL, rtol=0)
    padding = ~mask.any(dim=1)
    assert padding.sum() == 8 and got_full[padding].abs().max() == 0  # padding attends to nothing
    assert got_grads[1][padding].abs().max() == 0  # ... and is attended by nothing


def test_flex_forward_matches_reference():
    """FlexAttention with the document block mask; forward only (no CPU backward in torch)."""
    q, k, v = (x.detach() for x in inputs(2))
    for cp, rank in [(1, 0), (2, 0), (2, 1)]:
        table = build_segment_table(torch.tensor(CU), torch.tensor(CU_PADDED), CU_PADDED[-1] // cp, cp, rank)
        rows = table.local_positions
        ref = attend_segments(q[rows], k, v, table, SCALE, reference_segment)
        torch.testing.assert_close(flex_attend(q[rows], k, v, table, SCALE), ref, atol=TOL, rtol=0)


def test_cross_document_leak_is_caught():
    """Negative control: one causal attention over the whole bin differs from per-document attention."""
    q, k, v = (x.detach() for x in inputs(3))
    table = build_segment_table(torch.tensor(CU), torch.tensor(CU_PADDED), CU_PADDED[-1])
    packed = attend_segments(q, k, v, table, SCALE, reference_segment)
    leaky = reference_segment(q, k, v, SCALE)
    second_doc = slice(CU_PADDED[1], CU_PADDED[1] + CU[2] - CU[1])
    assert (packed[second_doc] - leaky[second_doc]).abs().max() > 1e-2


@pytest.mark.parametrize("cu, cu_padded, local, cp, match", [
    ([0, 5, 14], [0, 6, 20], 10, 2, "multiple of 2\\*cp=4"),
    ([0, 5, 12], [0, 8, 16], 10, 1, "holds 10 tokens"),
    ([0, 9, 14], [0, 8, 16], 16, 1, "stay within"),
])
def test_bad_packed_params_raise(cu, cu_padded, local, cp, match):
    with pytest.raises(ValueError, match=match):
        build_segment_table(torch.tensor(cu), torch.tensor(cu_padded), local, cp, 0)
