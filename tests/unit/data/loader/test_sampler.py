"""The global sample order: hold-out, nested fractions, apportioned mixtures, stage order."""

from __future__ import annotations

import numpy as np

from nemo_terminal.data.loader.sampler import Schedule, StageMix, apportion, split_bins


def test_fractions_are_nested_deterministic_and_disjoint_from_validation():
    sets = {f: split_bins(1000, seed=3, dataset_key=77, val_fraction=0.05, fraction=f) for f in (0.01, 0.1, 1.0)}
    val = set(sets[1.0][1])
    assert len(val) == 50 and all(set(v) == val for _, v in sets.values())  # one val set for every fraction
    t1, t10, t100 = (set(sets[f][0]) for f in (0.01, 0.1, 1.0))
    assert (len(t1), len(t10), len(t100)) == (10, 95, 950)
    assert t1 < t10 < t100 and not (t100 & val) and t100 | val == set(range(1000))
    again = split_bins(1000, seed=3, dataset_key=77, val_fraction=0.05, fraction=0.1)[0]
    assert np.array_equal(again, sets[0.1][0])
    assert not np.array_equal(split_bins(1000, 4, 77, 0.05, 0.1)[0], again)  # the seed matters


def test_apportion():
    assert apportion([1, 1, 1], 10).tolist() == [4, 3, 3]
    assert apportion([3, 1], 100).tolist() == [75, 25]
    assert apportion([5, 7], 12).tolist() == [5, 7]


def _plan(ids, sizes, weights=None, total=None):
    counts = apportion(weights or sizes, sum(sizes))
    return StageMix(datasets=ids, train_bins=[np.arange(n) for n in sizes], counts=counts, total=total)


def test_natural_mix_visits_every_bin_once_per_epoch_with_fresh_shuffles():
    sched = Schedule([_plan([0, 1], [30, 10])], seed=1)
    epochs = [list(zip(*sched.epoch(0, e), strict=False)) for e in range(3)]
    want = {(0, b) for b in range(30)} | {(1, b) for b in range(10)}
    assert all(sorted(e) == sorted(want) and len(e) == 40 for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    assert sched.samples(range(40, 80)) == epochs[1] and sched.locate(85) == (0, 2, 5)


def test_weights_set_proportions_and_upsample_small_datasets():
    # Dataset 1 is a tenth the size of dataset 0 but weighted 3:1; it is upsampled with
    # fresh passes (every bin used ~equally often), and proportions hold within sampling error.
    sched = Schedule([_plan([0, 1], [100, 10], weights=[1, 3])], seed=2)
    draw = sched.samples(range(4400))
    frac1 = np.mean([d == 1 for d, _ in draw])
    assert abs(frac1 - 0.75) < 4 * np.sqrt(0.75 * 0.25 / len(draw))
    window = [d for d, _ in draw[1000:1110]]  # any window is a shuffled mix, not blocks
    assert 0.5 < np.mean(np.array(window) == 1) < 0.95
    uses = np.bincount([b for d, b in draw if d == 1], minlength=10)
    assert uses.max() - uses.min() <= 1


def test_stages_run_in_order():
    sched = Schedule([_plan([0], [8], total=20), _plan([1], [5], total=7), _plan([0, 1], [8, 5])], seed=0)
    draw = sched.samples(range(60))
    assert {d for d, _ in draw[:20]} == {0} and {d for d, _ in draw[20:27]} == {1}
    assert {d for d, _ in draw[27:]} == {0, 1} and sched.total is None
    assert sched.locate(19) == (0, 2, 3) and sched.locate(20) == (1, 0, 0) and sched.locate(27) == (2, 0, 0)
