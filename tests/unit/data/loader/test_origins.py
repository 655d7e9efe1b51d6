"""Weighting the origins (sub-datasets) of one prepared dataset; older datasets without origins still load."""

from __future__ import annotations

import numpy as np
import pytest

from nemo_terminal.data.loader.module import TerminalDataModule
from nemo_terminal.data.store import PackedDataset, PackedDatasetWriter, write_random_dataset
from nemo_terminal.errors import UserError

ORIGINS = ["dataset_adapters/code", "skill_based_medium/net", "skill_based_medium/web"]
BINS = {0: 30, 1: 60, 2: 10}  # natural shares 0.3 / 0.6 / 0.1


def _write(path) -> PackedDataset:
    """Bins of three origins, interleaved as prepare writes them; each bin's first token = its origin."""
    manifest = {"tokenizer_hash": "test-tokenizer", "seq_length": 16, "pad_multiple": 1, "pad_id": 0,
                "origins": ORIGINS}
    order = np.random.default_rng(0).permutation([o for o, n in BINS.items() for _ in range(n)])
    with PackedDatasetWriter(path, manifest) as w:
        for o in order:
            w.add_bin([(np.full(8, 100 + o, dtype=np.int32), np.ones(8, dtype=np.uint8), 8)], int(o))
    return PackedDataset(path)


def _dm(datasets, **kw) -> TerminalDataModule:
    dm = TerminalDataModule({"datasets": datasets, **kw}, global_batch_size=4, micro_batch_size=1, dp_rank=0,
                            dp_size=1, tokenizer_hash="test-tokenizer")
    dm.setup()
    return dm


def _origin_shares(dm: TerminalDataModule, samples: int) -> np.ndarray:
    picks = dm.schedule.samples(range(samples))
    origins = np.array([dm.datasets[d].bin_origin[b] for d, b in picks])
    return np.bincount(origins, minlength=len(ORIGINS)) / samples


def test_origin_weights_set_the_mixture(tmp_path):
    path = str(tmp_path / "ds")
    ds = _write(path)
    assert [len(ds.origin_bins(o)) for o in ORIGINS] == [30, 60, 10]
    dm = _dm([{"path": path, "origin": "dataset_adapters/code", "weight": 1.0},
              {"path": path, "origin": "skill_based_medium", "weight": 3.0}])  # a prefix: both domains
    epoch = dm.schedule.stages[0].epoch_len
    shares = _origin_shares(dm, 10 * epoch)
    # 1:3 between the specs (exact per epoch, up to apportioning's rounding); within the prefix, natural 6:1
    assert shares[0] == pytest.approx(0.25, abs=1 / epoch)
    assert shares[1] / (shares[1] + shares[2]) == pytest.approx(6 / 7, abs=0.05)
    batch = next(iter(dm.train_dataloader()))  # what the trainer reads comes from those bins
    assert int(batch["tokens"].flatten()[0]) in (100, 101, 102)


def test_default_is_natural_proportions_and_old_datasets_load(tmp_path):
    path = str(tmp_path / "ds")
    _write(path)
    dm = _dm([{"path": path}])
    epoch = dm.schedule.stages[0].epoch_len
    assert epoch == 100
    assert _origin_shares(dm, epoch).tolist() == pytest.approx([0.3, 0.6, 0.1])  # each bin once per epoch
    old = write_random_dataset(tmp_path / "old", num_bins=8, seq_length=16)  # written without origins
    assert PackedDataset(old).origins == [] and len(_dm([{"path": str(old)}]).schedule.stages[0].train_bins[0]) == 8
    with pytest.raises(UserError, match=r"no origin 'web'; it has no origins \(prepared before"):
        _dm([{"path": str(old), "origin": "web"}])
    with pytest.raises(UserError, match=r"no origin 'skill_based_hard'; it has \['dataset_adapters/code'"):
        _dm([{"path": path, "origin": "skill_based_hard"}])
