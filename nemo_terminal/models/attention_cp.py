"""Packed (THD) and context-parallel bookkeeping: which keys each local query may see, and the
key/value all-gather over the CP group.

A packed micro-batch holds several documents end to end; under context parallelism every CP
rank holds its zigzag share of each document (`nemo_terminal.runtime.context_parallel.zigzag_indices`, the
one definition of the split). Attention is causal within a document and empty across
documents and for padding. This module turns cu_seqlens into that rule as data, once per
forward, so the kernels stay simple.

A *segment* is a run of local query rows that are consecutive positions of one document. Query
j of a segment sits at document offset `offset + j` and sees exactly the document's keys
[0, offset + j]: a causal mask aligned to the bottom right of a (n_q x n_kv) block with
n_kv = offset + n_q. Queries in padding belong to no segment: their output is zero and they
reach no key; keys in padding lie beyond every real query's n_kv, so nothing attends to them.

Shape legend: T = local tokens on this CP rank, T_full = T * cp (full coordinates), n = docs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from nemo_terminal.runtime.context_parallel import zigzag_indices


@dataclass(frozen=True)
class Segment:
    """Local query rows [q_start, q_start + n_q) attend keys [kv_start, kv_start + n_kv) of the
    full-coordinate sequence, causally aligned bottom-right."""

    q_start: int
    n_q: int
    kv_start: int
    n_kv: int


@dataclass(frozen=True)
class SegmentTable:
    """Everything the kernels need about one packed micro-batch on one CP rank."""

    segments: tuple[Segment, ...]
    local_positions: torch.Tensor
    """LongTensor [T]: each local row's position in full coordinates (zigzag order under CP)."""
    cu_seqlens: np.ndarray
    """int64 [n+1]: unpadded cumulative lengths (full coordinates)."""
    cu_seqlens_padded: np.ndarray
    """int64 [n+1]: padded cumulative lengths (full coordinates)."""
    cp_size: int

    @property
    def num_local(self) -> int:
        return int(self.local_positions.numel())

    @property
    def num_full(self) -> int:
        return int(self.cu_seqlens_padded[-1])

    def token_doc_and_offset(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per full-coordinate position: document id, offset inside it, and whether it is real."""
        doc = np.searchsorted(self.cu_seqlens_padded, positions, side="right") - 1
        offset = positions - self.cu_seqlens_padded[doc]
        real = offset < np.diff(self.cu_seqlens)[doc]
        return doc, offset, real


def _validate(cu: np.ndarray, cu_padded: np.ndarray, cp_size: int, num_local: int) -> None:
    """User-facing checks: a wrong batch must fail here, naming values, not deep in a kernel."""
    if cu.ndim != 1 or cu.shape != cu_padded.shape or len(cu) < 2:
        raise ValueError(f"cu_seqlens {cu.tolist()} and cu_seqlens_padded {cu_padded.tolist()} must be "
                         "1-D of the same length n+1 >= 2")
    lens, lens_padded = np.diff(cu), np.diff(cu_padded)
    if cu[0] != 0 or cu_padded[0] != 0 or (lens < 0).any() or (lens > lens_padded).any():
        raise ValueError(f"cu_seqlens {cu.tolist()} must start at 0, grow, and stay within "
                         f"cu_seqlens_padded {cu_padded.tolist()} document by document")
    if cp_size > 1 and (lens_padded % (2 * cp_size)).any():
        raise ValueError(f"context parallelism cp={cp_size} needs every padded document length to be a "
                         f"multiple of 2*cp={2 * cp_size}; got {lens_padded.tolist()}")
    if cu_padded[-1] != num_local * cp_size:
        raise ValueError(f"this rank holds {num_local} tokens but cu_seqlens_padded[-1]={cu_padded[-1]} "
                         f"over cp={cp_size} ranks means {cu_padded[-1] // max(cp_size, 1)}: the batch and "
                         "packed_seq_params disagree")


def build_segment_table(
    cu_seqlens: torch.Tensor, cu_seqlens_padded: torch.Tensor | None, num_local: int,
    cp_size: int = 1, cp_rank: int = 0,
) -> SegmentTable:
    """The segments of one micro-batch on CP rank `cp_rank` (host-side: one sync for cu_seqlens)."""
    cu = cu_seqlens.detach().cpu().numpy().astype(np.int64)
    cu_padded = cu if cu_seqlens_padded is None else cu_seqlens_padded.detach().cpu().numpy().astype(np.int64)
    _validate(cu, cu_padded, cp_size, num_local)
    positions = zigzag_indices(cu_padded, cp_size, cp_rank).numpy()
    assert len(positions) == num_local
    table = SegmentTable((), torch.from_numpy(positions), cu, cu_padded, cp_size)
    doc, offset, _ = table.token_doc_and_offset(positions)
    # A run breaks where the document changes or positions stop being consecutive.
    breaks = np.flatnonzero((np.diff(doc) != 0) | (np.diff(positions) != 1)) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [num_local]])
    lens = np.diff(cu)
    segments = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=False):
        d, a = int(doc[s]), int(offset[s])
        n_q = min(a + (e - s), int(lens[d])) - a  # drop the run's padding rows
        if n_q > 0:
            segments.append(Segment(q_start=s, n_q=n_q, kv_start=int(cu_padded[d]), n_kv=a + n_q))
    return SegmentTable(tuple(segments), table.local_positions, cu, cu_padded, cp_size)


_LAST_TABLE: list = []  # one entry: (key tensors kept alive, key, table); every layer of a step shares it


def segment_table_for_step(cu_seqlens: torch.Tensor, cu_seqlens_padded: torch.Tensor | None, num_local: int,
                           cp_size: int, cp_rank: int) -> SegmentTable:
    """`build_segment_table`, computed once per micro-batch instead of once per layer.

    The cache holds the cu_seqlens tensors themselves, so an equal id() means the same live
    object, and their _version catches in-place edits.
    """
    tensors = (cu_seqlens, cu_seqlens_padded)
    key = tuple((id(t), t._version) if t is not None else None for t in tensors) + (num_local, cp_size, cp_rank)
    if _LAST_TABLE and _LAST_TABLE[0][1] == key:
        return _LAST_TABLE[0][2]
    table = build_segment_table(cu_seqlens, cu_seqlens_padded, num_local, cp_size, cp_rank)
    _LAST_TABLE[:] = [(tensors, key, table)]
    return table


def dense_mask(table: SegmentTable) -> torch.Tensor:
    """BoolTensor [T, T_full], True where a local query may attend a full-coordinate key.

    O(T·T_full) memory: for tests and small inputs only; the kernels never build it.
    """
    q_doc, q_off, q_real = table.token_doc_and_offset(table.local_positions.numpy())
    k_doc, k_off, k_real = table.token_doc_and_offset(np.arange(table.num_full))
    allowed = (
        (q_doc[:, None] == k_doc[None, :]) & (k_off[None, :] <= q_off[:, None])
        & q_real[:, None] & k_real[None, :]
    )
    return torch.from_numpy(allowed)


class _GatherSequence(torch.autograd.Function):
    """All-gather along dim 0 over the CP group; backward reduce-scatters.

    Every rank's queries read every rank's keys, so the gradient of a key/value row is the sum
    of all ranks' contributions, and only its owner needs it: all-gather forward, reduce-scatter
    backward. gloo has no reduce-scatter, so there it is an all-reduce and a local slice.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:  # type: ignore[override]
        ctx.group = group
        parts = [torch.empty_like(x) for _ in range(group.size())]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        group = ctx.group
        size = group.size()
        grad = grad.contiguous()
        if dist.get_backend(group) == "nccl":
            out = grad.new_empty((grad.shape[0] // size, *grad.shape[1:]))
            dist.reduce_scatter_tensor(out, grad, group=group)
            return out, None
        grad = grad.clone()  # all_reduce is in place; autograd may reuse the incoming buffer
        dist.all_reduce(grad, group=group)
        return grad.chunk(size, dim=0)[group.rank()].contiguous(), None


def gather_full_sequence(x: torch.Tensor, table: SegmentTable, group) -> torch.Tensor:
    """[T, ...] local rows (zigzag order) -> [T_full, ...] in full coordinates, differentiably.

    Every rank's rows are gathered, then put back in document order so that each document's
    keys are one contiguous span [cu_seqlens_padded[i], cu_seqlens_padded[i+1]).
    """
    size = group.size()
    assert table.cp_size == size, (table.cp_size, size)
    gathered = _GatherSequence.apply(x, group)  # [T_full, ...], rank after rank
    owner_positions = torch.cat([zigzag_indices(table.cu_seqlens_padded, size, r) for r in range(size)])
    inverse = torch.argsort(owner_positions).to(x.device)
    return gathered.index_select(0, inverse)
