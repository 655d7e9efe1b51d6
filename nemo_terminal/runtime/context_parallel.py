"""The context-parallel split of a packed sequence, shared by the data loader and the attention.

Each document's padded span is cut into 2·cp equal chunks and CP rank r keeps chunks r and
2·cp−1−r (zigzag, balancing causal-attention work), as Transformer Engine's
`thd_get_partitioned_indices` does.
"""

from __future__ import annotations

import numpy as np
import torch


def zigzag_positions(cu_padded: np.ndarray, cp_size: int, cp_rank: int) -> np.ndarray:
    """Global positions held by `cp_rank`, in order: chunks r and 2cp−1−r of every document."""
    starts, lens = cu_padded[:-1], np.diff(cu_padded)
    if cp_size == 1:
        return np.arange(int(cu_padded[-1]), dtype=np.int64)
    assert np.all(lens % (2 * cp_size) == 0), "document padded lengths must be multiples of 2*cp"
    chunk = lens // (2 * cp_size)  # [n]
    first = starts + cp_rank * chunk
    second = starts + (2 * cp_size - 1 - cp_rank) * chunk
    seg_starts = np.stack([first, second], axis=1).reshape(-1)  # [2n], in document order
    seg_lens = np.repeat(chunk, 2)
    offsets = np.arange(int(seg_lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(seg_lens) - seg_lens, seg_lens)
    return np.repeat(seg_starts, seg_lens) + offsets


def zigzag_indices(cu_seqlens_padded: torch.Tensor | np.ndarray, cp_size: int, cp_rank: int) -> torch.Tensor:
    """LongTensor [T]: the full-sequence positions CP rank `cp_rank` holds, in order.

    The one definition of the CP split: batches, attention and tests all use it.
    """
    if not 0 <= cp_rank < cp_size:
        raise ValueError(f"cp_rank={cp_rank} outside [0, {cp_size})")
    cu = cu_seqlens_padded.cpu().numpy() if isinstance(cu_seqlens_padded, torch.Tensor) else cu_seqlens_padded
    return torch.from_numpy(zigzag_positions(np.asarray(cu, dtype=np.int64), cp_size, cp_rank))
