"""Shared attention test cases: a packed layout and a dense O(T²) oracle written independently
of nemo_terminal (used by the CPU kernel tests and the gpu-marked tests)."""

from __future__ import annotations

import math

import torch

# Four documents: unpadded lengths 5, 9, 3, 7; padded to multiples of 4 (2·cp for cp=2), the
# last one also holding the bin's unused tail.
CU = [0, 5, 14, 17, 24]
CU_PADDED = [0, 8, 20, 24, 32]
HEADS, GROUPS, DIM = 4, 2, 8
SCALE = 1.0 / math.sqrt(DIM)


def oracle_mask(cu: list[int], cu_padded: list[int]) -> torch.Tensor:
    """[T_full, T_full] True where query i may attend key j: same doc, causal, both unpadded."""
    t = cu_padded[-1]
    doc, off, real = [0] * t, [0] * t, [False] * t
    for d in range(len(cu) - 1):
        for p in range(cu_padded[d], cu_padded[d + 1]):
            doc[p], off[p] = d, p - cu_padded[d]
            real[p] = off[p] < cu[d + 1] - cu[d]
    return torch.tensor([[doc[i] == doc[j] and off[j] <= off[i] and real[i] and real[j] for j in range(t)]
                         for i in range(t)])


def oracle(q, k, v, mask):
    """Dense masked attention; rows with no allowed key are zero (padding)."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * SCALE
    probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)
    return torch.einsum("hqk,khd->qhd", probs, v)


def inputs(seed: int = 0, cu_padded: list[int] = CU_PADDED):
    """Random q [T, HEADS, DIM], k and v [T, GROUPS, DIM] that require grad (T = cu_padded[-1])."""
    gen = torch.Generator().manual_seed(seed)
    t = cu_padded[-1]
    return [torch.randn(t, n, DIM, generator=gen, requires_grad=True) for n in (HEADS, GROUPS, GROUPS)]
