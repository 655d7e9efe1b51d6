"""The on-disk packed dataset: round trip, atomic publish, refusal of incomplete directories."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from nemo_terminal.data.store import PackedDataset, PackedDatasetWriter, dataset_fingerprint, write_random_dataset
from nemo_terminal.errors import UserError

MANIFEST = dict(tokenizer_hash="h", seq_length=16, pad_multiple=4, pad_id=0, cp_size=2, tp_size=1,
                sequence_parallel=False, seed=0, config={}, inputs=[])


def _doc(n: int, padded: int, start: int = 1):
    tokens = np.zeros(padded, np.int32)
    tokens[:n] = np.arange(start, start + n)
    mask = np.zeros(padded, np.uint8)
    mask[n // 2:n] = 1
    return tokens, mask, n


def test_round_trip(tmp_path):
    out = tmp_path / "ds"
    bins = [[_doc(7, 8), _doc(3, 4, 100)], [_doc(16, 16, 200)], [_doc(1, 4, 300)]]
    with PackedDatasetWriter(out, MANIFEST) as w:
        for b in bins:
            w.add_bin(b)
        w.write_json("report.json", {"dropped": 0})
        w.update_manifest(seed=7)
    ds = PackedDataset(out)
    assert len(ds) == 3 and ds.report == {"dropped": 0}
    m = ds.manifest
    assert (m["num_bins"], m["num_docs"], m["num_tokens"], m["seed"]) == (3, 4, 32, 7)
    assert m["format"] == "nemo_terminal.packed/1"
    for i, b in enumerate(bins):
        got = ds.bin(i)
        np.testing.assert_array_equal(got.tokens, np.concatenate([d[0] for d in b]))
        np.testing.assert_array_equal(got.loss_mask, np.concatenate([d[1] for d in b]))
        np.testing.assert_array_equal(got.doc_lens, [d[2] for d in b])
        np.testing.assert_array_equal(got.doc_lens_padded, [len(d[0]) for d in b])
    assert got.tokens.dtype == np.int32 and got.loss_mask.dtype == np.uint8
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp dir left behind
    # Workers receive the dataset by path, not by copying the memory map.
    clone = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < 500 and np.array_equal(clone.bin(1).tokens, ds.bin(1).tokens)


def test_refuses_and_cleans_up(tmp_path):
    out = tmp_path / "ds"
    write_random_dataset(out, num_bins=3, seq_length=16, pad_multiple=4)
    fp = dataset_fingerprint(out)
    with pytest.raises(UserError, match="already exists"):
        with PackedDatasetWriter(out, MANIFEST):
            pass
    with pytest.raises(RuntimeError):  # a failure mid-write leaves the old dataset and no temp dir
        with PackedDatasetWriter(out, MANIFEST, force=True) as w:
            w.add_bin([_doc(4, 4)])
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"] and dataset_fingerprint(out) == fp
    with pytest.raises(ValueError, match="pad_multiple"):
        with PackedDatasetWriter(tmp_path / "bad", MANIFEST) as w:
            w.add_bin([_doc(3, 3)])
    with pytest.raises(ValueError, match="exceeds seq_length"):
        with PackedDatasetWriter(tmp_path / "bad", MANIFEST) as w:
            w.add_bin([_doc(12, 12), _doc(8, 8)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    write_random_dataset(out, num_bins=4, seq_length=16, pad_multiple=4, force=True)
    assert len(PackedDataset(out)) == 4 and dataset_fingerprint(out) != fp


def test_incomplete_or_corrupt_dataset_is_refused(tmp_path):
    out = write_random_dataset(tmp_path / "ds", num_bins=3, seq_length=16, pad_multiple=4)
    with pytest.raises(UserError, match="not a directory"):
        PackedDataset(tmp_path / "missing")
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "num_tokens": 1}))
    with pytest.raises(UserError, match="corrupt dataset"):
        PackedDataset(out)
    (out / "manifest.json").unlink()
    with pytest.raises(UserError, match="incomplete dataset .* re-run prepare"):
        PackedDataset(out)
