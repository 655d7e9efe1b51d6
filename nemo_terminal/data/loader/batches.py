"""Packed bins -> one THD micro-batch for one context-parallel rank.

A micro-batch is `micro_batch_size` bins laid end to end as ONE packed sequence (megatron-core's
THD path takes batch dimension 1). Shape legend: T_full = mbs · seq_length (the unsplit
sequence), T = T_full / cp (this CP rank's share), n = number of documents.

Padding conventions (shared with attention and the trainer through `zigzag_indices`):
- each document's padded span is a multiple of 2·cp; each bin's unused tail is merged into the
  padded span of its last document, so cu_seqlens_padded[-1] == T_full;
- labels[t] = tokens[t+1] inside a document's unpadded span, pad_id elsewhere; loss_mask[t] is
  the store's target mask at t+1 (the last token of a document has no target);
- position_ids restart at 0 at each document and keep counting through its padding;
- with cp > 1 each padded span is cut into 2·cp equal chunks and CP rank r keeps chunks r and
  2·cp−1−r (zigzag, balancing causal-attention work); cu_seqlens stay in full coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from megatron.core.packed_seq_params import PackedSeqParams

from nemo_terminal.data.store import Bin
from nemo_terminal.runtime.context_parallel import zigzag_positions


def _concat_bins(bins: Sequence[Bin], seq_length: int, pad_id: int):
    """Full-sequence tokens/store-mask plus unpadded and padded (tail-merged) document lengths."""
    t_full = len(bins) * seq_length
    tokens = np.full(t_full, pad_id, dtype=np.int64)
    store_mask = np.zeros(t_full, dtype=np.uint8)
    lens, lens_padded = [], []
    for i, b in enumerate(bins):
        n = len(b.tokens)
        assert 0 < n <= seq_length and len(b.doc_lens) > 0, f"bin of {n} tokens does not fit seq_length {seq_length}"
        tokens[i * seq_length:i * seq_length + n] = b.tokens
        store_mask[i * seq_length:i * seq_length + n] = b.loss_mask
        padded = np.array(b.doc_lens_padded, dtype=np.int64)
        padded[-1] += seq_length - n  # the bin's unused tail belongs to its last document
        lens.append(np.asarray(b.doc_lens, dtype=np.int64))
        lens_padded.append(padded)
    return tokens, store_mask, np.concatenate(lens), np.concatenate(lens_padded)


def build_micro_batch(bins: Sequence[Bin], seq_length: int, pad_id: int, cp_size: int = 1,
                      cp_rank: int = 0) -> dict[str, Any]:
    """Concatenate `bins` into one THD sequence and keep this CP rank's zigzag share.

    Returns the micro-batch dict the trainer consumes (see module docstring; tensors carry a
    leading batch dimension of 1 except the cu_seqlens vectors).
    """
    tokens, store_mask, lens, lens_padded = _concat_bins(bins, seq_length, pad_id)
    t_full = len(tokens)
    cu = np.concatenate([[0], np.cumsum(lens)])
    cu_padded = np.concatenate([[0], np.cumsum(lens_padded)])
    assert cu_padded[-1] == t_full
    # offset[t]: position of t inside its document; length[t]: that document's unpadded length.
    doc_start = np.repeat(cu_padded[:-1], lens_padded)
    offset = np.arange(t_full, dtype=np.int64) - doc_start
    length = np.repeat(lens, lens_padded)
    has_target = offset < length - 1
    labels = np.where(has_target, np.roll(tokens, -1), pad_id)
    loss_mask = np.where(has_target, np.roll(store_mask, -1), 0).astype(np.float32)
    is_real = offset < length

    idx = zigzag_positions(cu_padded, cp_size, cp_rank)
    local_mask = loss_mask[idx]
    return {
        "tokens": torch.from_numpy(tokens[idx]).unsqueeze(0),
        "labels": torch.from_numpy(labels[idx]).unsqueeze(0),
        "loss_mask": torch.from_numpy(local_mask).unsqueeze(0),
        "position_ids": torch.from_numpy(offset[idx]).unsqueeze(0),
        "cu_seqlens": torch.from_numpy(cu.astype(np.int32)),
        "cu_seqlens_padded": torch.from_numpy(cu_padded.astype(np.int32)),
        "max_seqlen": rope_max_seqlen(int(lens_padded.max()), seq_length, t_full),
        "num_loss_tokens": int(local_mask.sum()),
        "num_tokens": int(is_real[idx].sum()),
    }


def rope_max_seqlen(longest: int, seq_length: int, t_full: int) -> int:
    """The max_seqlen a micro-batch declares: `longest` (padded document) rounded up to a power of two.

    megatron's RotaryEmbedding.forward caches one table per distinct max_seqlen (lru_cache of 32),
    so a per-batch exact value would keep up to 32 tables of [max_seqlen, head_dim] alive; rounding
    bounds the keys to log2(seq_length) + 2 while staying within 2x of the longest document (TE sizes
    some softmax statistics by it). Never rounded onto t_full: megatron's THD RoPE reads a table of
    exactly t_full rows as *global* positions (offset by each document's start), which would be
    wrong for every document but the first.
    """
    bucket = min(1 << max(longest - 1, 0).bit_length(), seq_length)
    if bucket == t_full and longest < t_full:
        bucket = t_full - 1
    return max(bucket, longest)


def packed_seq_params(batch: dict[str, Any], padded_only: bool = False):
    """megatron-core PackedSeqParams (THD) for a micro-batch; cu_seqlens in full coordinates.

    padded_only (CP 1 only): each padded span is the document. Its padding trails its real tokens,
    which causal attention never lets them see, and has no loss, so the loss is unchanged, and TE
    runs its plain THD kernel instead of the padded-THD one (as Megatron-Bridge does).
    """
    if padded_only:
        cu = batch["cu_seqlens_padded"]
        return PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                               max_seqlen_q=batch["max_seqlen"], max_seqlen_kv=batch["max_seqlen"])
    return PackedSeqParams(
        qkv_format="thd",
        cu_seqlens_q=batch["cu_seqlens"], cu_seqlens_kv=batch["cu_seqlens"],
        cu_seqlens_q_padded=batch["cu_seqlens_padded"], cu_seqlens_kv_padded=batch["cu_seqlens_padded"],
        max_seqlen_q=batch["max_seqlen"], max_seqlen_kv=batch["max_seqlen"],
    )
