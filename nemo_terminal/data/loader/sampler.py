"""The global sample order: which (dataset, bin) is sample number p, for every p, on every rank.

Everything is a pure function of the seed and the datasets, with no mutable RNG: any rank, any
DataLoader worker and any resumed run computes the same order, and a position (one integer) is a
complete resume state.

- Hold-out and fractions: each dataset's bins get one seeded permutation (seed + dataset
  fingerprint). Its head is the validation hold-out; the training pool is the rest, and a
  fraction f takes the first f of the pool, so subsets are nested (1% ⊂ 10% ⊂ 100%).
- Stages run in order, each for a fixed number of samples (the default stage never ends).
- An epoch of a stage has as many samples as its datasets have bins. Dataset j contributes
  counts[j] of them, apportioned from the weights (natural weights: counts[j] = its bins, so each
  bin appears exactly once per epoch). Dataset j's samples come from its own stream of
  shuffled passes, continued across epochs; the epoch's samples are then shuffled together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Distinct tags keep the independent random streams apart.
_HOLDOUT, _PASS, _EPOCH = 1, 2, 3


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def split_bins(num_bins: int, seed: int, dataset_key: int, val_fraction: float,
               fraction: float, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train bins, validation bins) of one dataset, each sorted; see module docstring. `allowed`
    (the bins of one origin) restricts the training pool before `fraction` takes its share; the
    hold-out stays the dataset's, so every origin's spec shares one validation set."""
    order = _rng(seed, _HOLDOUT, dataset_key).permutation(num_bins)
    n_val = int(round(val_fraction * num_bins))
    pool = order[n_val:]
    if allowed is not None:
        pool = pool[np.isin(pool, allowed)]
    n_train = max(1, int(round(fraction * len(pool)))) if len(pool) else 0
    return np.sort(pool[:n_train]), np.sort(order[:n_val])


def apportion(weights: Sequence[float], total: int) -> np.ndarray:
    """Integer counts summing to `total`, proportional to `weights` (largest remainder)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = w / w.sum() * total
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


@dataclass
class StageMix:
    """One stage, resolved: which datasets, how many samples of each per epoch, how long."""

    datasets: list[int]
    """Indices into the module's opened dataset list."""
    train_bins: list[np.ndarray]
    """Per stage dataset: the bin ids it may draw (after hold-out and fraction)."""
    counts: np.ndarray
    """Per stage dataset: samples drawn from it per epoch (sums to epoch_len)."""
    total: int | None
    """Samples in this stage; None = unbounded (the default single stage)."""

    @property
    def epoch_len(self) -> int:
        return int(self.counts.sum())


class Schedule:
    """Maps global sample positions to (dataset index, bin id)."""

    def __init__(self, stages: list[StageMix], seed: int):
        assert stages and all(s.epoch_len > 0 for s in stages)
        assert all(s.total is not None for s in stages[:-1]), "only the last stage may be unbounded"
        self.stages, self.seed = stages, seed
        self.starts = np.concatenate([[0], np.cumsum([s.total or 0 for s in stages])]).astype(np.int64)
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def total(self) -> int | None:
        """Samples in the whole schedule; None when the last stage is unbounded."""
        return None if self.stages[-1].total is None else int(self.starts[-1])

    def locate(self, position: int) -> tuple[int, int, int]:
        """(stage, epoch within stage, sample within epoch) of a global position."""
        assert position >= 0 and (self.total is None or position < self.total), position
        stage = int(np.searchsorted(self.starts[1:], position, side="right"))
        stage = min(stage, len(self.stages) - 1)
        local = position - int(self.starts[stage])
        epoch, offset = divmod(local, self.stages[stage].epoch_len)
        return stage, epoch, offset

    def samples(self, positions: Sequence[int]) -> list[tuple[int, int]]:
        """(dataset index, bin id) for each global position."""
        out = []
        for p in positions:
            stage, epoch, offset = self.locate(int(p))
            ds, bins = self.epoch(stage, epoch)
            out.append((int(ds[offset]), int(bins[offset])))
        return out

    def epoch(self, stage: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(dataset index [E], bin id [E]) of one epoch of one stage, in training order (cached)."""
        key = (stage, epoch)
        if key not in self._cache:
            if len(self._cache) >= 4:  # a step spans at most two epochs; keep memory flat
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = self._build_epoch(stage, epoch)
        return self._cache[key]

    def _build_epoch(self, stage: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        mix = self.stages[stage]
        ds_parts, bin_parts = [], []
        for j, (count, pool) in enumerate(zip(mix.counts, mix.train_bins, strict=False)):
            k = np.arange(epoch * int(count), (epoch + 1) * int(count), dtype=np.int64)
            picks = np.empty(len(k), dtype=np.int64)
            n = len(pool)
            for p in np.unique(k // n):  # the passes of dataset j's stream this epoch touches
                sel = (k // n) == p
                perm = _rng(self.seed, _PASS, stage, j, p).permutation(n)
                picks[sel] = pool[perm[k[sel] % n]]
            ds_parts.append(np.full(len(k), mix.datasets[j], dtype=np.int64))
            bin_parts.append(picks)
        order = _rng(self.seed, _EPOCH, stage, epoch).permutation(mix.epoch_len)
        return np.concatenate(ds_parts)[order], np.concatenate(bin_parts)[order]

    def __getstate__(self) -> dict:  # workers rebuild the cache rather than receive it
        return {**self.__dict__, "_cache": {}}
