"""One THD micro-batch from bins: shifts, masks, positions, cu_seqlens, and the exact CP zigzag split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nemo_terminal.data.loader.batches import build_micro_batch, packed_seq_params
from nemo_terminal.data.store import Bin, PackedDataset, write_random_dataset
from nemo_terminal.runtime.context_parallel import zigzag_indices


def _bin(docs: list[tuple[list[int], list[int], int]]) -> Bin:
    """docs: (padded tokens, padded store mask, unpadded length)."""
    return Bin(tokens=np.concatenate([np.array(t, np.int32) for t, _, _ in docs]),
               loss_mask=np.concatenate([np.array(m, np.uint8) for _, m, _ in docs]),
               doc_lens=np.array([n for _, _, n in docs]), doc_lens_padded=np.array([len(t) for t, _, _ in docs]))


def test_hand_computed_batch():
    # seq_length 8, pad 0. Bin 0: doc [5 6 7] padded to 4 (mask targets 6,7) + doc [8 9] padded to 2.
    # Bin 1: doc [1 2 3 4 5 6] (targets 4,5,6), tail of 2 merged into it.
    b0 = _bin([([5, 6, 7, 0], [0, 1, 1, 0], 3), ([8, 9], [0, 1], 2)])
    b1 = _bin([([1, 2, 3, 4, 5, 6], [0, 0, 0, 1, 1, 1], 6)])
    out = build_micro_batch([b0, b1], seq_length=8, pad_id=0)
    assert out["tokens"].tolist() == [[5, 6, 7, 0, 8, 9, 0, 0, 1, 2, 3, 4, 5, 6, 0, 0]]
    assert out["labels"].tolist() == [[6, 7, 0, 0, 9, 0, 0, 0, 2, 3, 4, 5, 6, 0, 0, 0]]
    assert out["loss_mask"].tolist() == [[1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7]]
    assert out["cu_seqlens"].tolist() == [0, 3, 5, 11]
    assert out["cu_seqlens_padded"].tolist() == [0, 4, 8, 16]  # bin 0's tail merged into its last doc
    assert out["cu_seqlens"].dtype == torch.int32 and out["loss_mask"].dtype == torch.float32
    assert out["tokens"].dtype == torch.int64
    assert (out["max_seqlen"], out["num_loss_tokens"], out["num_tokens"]) == (8, 6, 11)
    p = packed_seq_params(out)
    assert p.qkv_format == "thd" and p.max_seqlen_q == p.max_seqlen_kv == 8
    assert p.cu_seqlens_q is out["cu_seqlens"] and p.cu_seqlens_kv_padded is out["cu_seqlens_padded"]


def test_zigzag_definition():
    # One document of 16 at cp=2: 4 chunks of 4; rank 0 holds chunks 0 and 3, rank 1 chunks 1 and 2.
    cu = torch.tensor([0, 16, 24], dtype=torch.int32)
    assert zigzag_indices(cu, 2, 0).tolist() == [0, 1, 2, 3, 12, 13, 14, 15, 16, 17, 22, 23]
    assert zigzag_indices(cu, 2, 1).tolist() == [4, 5, 6, 7, 8, 9, 10, 11, 18, 19, 20, 21]
    with pytest.raises(AssertionError):
        zigzag_indices(torch.tensor([0, 6]), 2, 0)


@pytest.mark.parametrize("cp", [2, 4])
def test_cp_shares_reassemble_to_the_unsplit_batch(tmp_path, cp):
    ds = PackedDataset(write_random_dataset(tmp_path / "ds", num_bins=6, seq_length=64,
                                            pad_multiple=2 * cp, max_doc=40, seed=cp))
    bins = [ds.bin(i) for i in range(len(ds))]
    for mbs in (1, 3):
        full = build_micro_batch(bins[:mbs], 64, ds.pad_id)
        t_full = mbs * 64
        shares = [build_micro_batch(bins[:mbs], 64, ds.pad_id, cp, r) for r in range(cp)]
        for key in ("tokens", "labels", "loss_mask", "position_ids"):
            rebuilt = torch.full((t_full,), -1, dtype=full[key].dtype)
            for r, share in enumerate(shares):
                assert share[key].shape == (1, t_full // cp)
                rebuilt[zigzag_indices(share["cu_seqlens_padded"], cp, r)] = share[key][0]
            assert torch.equal(rebuilt, full[key][0]), key
        for key in ("cu_seqlens", "cu_seqlens_padded", "max_seqlen"):
            assert all(torch.equal(torch.as_tensor(s[key]), torch.as_tensor(full[key])) for s in shares)
        assert sum(s["num_loss_tokens"] for s in shares) == full["num_loss_tokens"]
        assert sum(s["num_tokens"] for s in shares) == full["num_tokens"] == sum(b.doc_lens.sum() for b in bins[:mbs])


def test_labels_never_cross_documents(tmp_path):
    ds = PackedDataset(write_random_dataset(tmp_path / "ds", num_bins=4, seq_length=128, max_doc=30))
    out = build_micro_batch([ds.bin(i) for i in range(4)], 128, ds.pad_id)
    tokens, labels, mask = out["tokens"][0], out["labels"][0], out["loss_mask"][0]
    cu = out["cu_seqlens"].tolist()
    cu_p = out["cu_seqlens_padded"].tolist()
    for d, s in enumerate(cu_p[:-1]):
        n = cu[d + 1] - cu[d]
        assert torch.equal(labels[s:s + n - 1], tokens[s + 1:s + n])
        assert (labels[s + n - 1:cu_p[d + 1]] == ds.pad_id).all() and mask[s + n - 1:cu_p[d + 1]].sum() == 0
    store_mask = np.concatenate([np.pad(ds.bin(i).loss_mask, (0, 128 - len(ds.bin(i).tokens))) for i in range(4)])
    assert out["num_loss_tokens"] <= int(store_mask.sum())
