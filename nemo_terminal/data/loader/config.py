"""What the trainer reads: datasets, their mixture weights and fractions, curriculum stages, validation.

Typed dataclasses usable as omegaconf structured configs; each validates itself in
__post_init__ so a bad recipe fails at load time, naming the `data.` field and the fix.
(No `from __future__ import annotations`: omegaconf needs the real types.)
"""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nemo_terminal.errors import UserError
from nemo_terminal.options import check_int


@dataclass
class DatasetSpec:
    """One prepared dataset (a directory written by `nemo-terminal prepare`) in a mixture."""

    path: str = ""
    """Directory of the prepared dataset."""
    weight: float | None = None
    """Share of this dataset in its stage's mixture, relative to the others' weights (normalized).
    None (the default) means "natural": proportional to the dataset's bin count, so every bin is
    seen once per epoch, as in the paper's best run (everything mixed). Within one stage give
    either all weights or none."""
    fraction: float = 1.0
    """Use a seeded subset of this share of the dataset's training bins (0 < fraction <= 1), for
    scaling studies. Subsets are nested for a fixed seed: the 1% bins are inside the 10% bins."""
    origin: str | None = None
    """One origin (sub-dataset) of the prepared dataset, e.g. `dataset_adapters/code`, or every
    origin under a prefix (`skill_based_medium`). None: all its bins. The same path may appear
    once per origin, each with its own weight; `prepare`'s report.json lists the origins."""

    def __post_init__(self) -> None:
        if not self.path:
            raise UserError("data.datasets[].path is empty; give the prepared dataset's directory")
        if self.weight is not None and not (math.isfinite(self.weight) and self.weight > 0):
            raise UserError(f"data.datasets[{self.path}].weight={self.weight} must be > 0 (or null for natural)")
        if not 0 < self.fraction <= 1:
            raise UserError(f"data.datasets[{self.path}].fraction={self.fraction} must be in (0, 1]")


@dataclass
class StageSpec:
    """One curriculum stage: a mixture, run for a number of samples (bins) or of epochs."""

    datasets: list[DatasetSpec] = field(default_factory=list)
    """The stage's mixture."""
    samples: int | None = None
    """Length of the stage in samples (packed bins). Exactly one of samples / epochs."""
    epochs: float | None = None
    """Length in passes over the stage's mixture (may be fractional). Exactly one of samples / epochs."""

    def __post_init__(self) -> None:
        self.datasets = [_as_spec(d) for d in self.datasets]
        if not self.datasets:
            raise UserError("data.stages[].datasets is empty; list at least one prepared dataset")
        if self.samples is not None and self.samples < 1:
            raise UserError(f"data.stages[].samples={self.samples} must be >= 1")
        if self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0):
            raise UserError(f"data.stages[].epochs={self.epochs} must be a finite number > 0")
        _check_weights(self.datasets)

    @property
    def bounded(self) -> bool:
        """A curriculum stage has a length; the default single stage (neither set) runs unbounded."""
        return self.samples is not None or self.epochs is not None


@dataclass
class DataConfig:
    """The training data: one mixed stage by default, or an ordered curriculum of stages."""

    path: str | None = None
    """Shortcut for a single prepared dataset (same as datasets=[{path: ...}])."""
    datasets: list[DatasetSpec] = field(default_factory=list)
    """The mixture of the default single stage, which runs for as many epochs as the trainer asks
    (a fresh shuffle each epoch). Mixing everything in one stage scored best in the paper."""
    stages: list[StageSpec] = field(default_factory=list)
    """Optional curriculum; replaces path/datasets. Stages run in order; training data ends after
    the last one."""
    val_fraction: float = 0.0
    """Share of each training dataset's bins held out for validation (seeded, disjoint from
    training, and independent of `fraction`, so scaling studies share one validation set).
    0 by default: the paper trained on everything."""
    val_path: str | None = None
    """A separate prepared dataset used whole for validation (instead of val_fraction)."""
    seed: int = 1234
    """Seeds the per-epoch shuffles, the fraction subsets and the validation hold-out."""
    num_workers: int = 1
    """DataLoader worker processes per rank. One suffices: building a 32K micro-batch costs about
    a millisecond, far below a training step; batches do not depend on this number."""
    prefetch_factor: int = 4
    """Micro-batches each worker prepares ahead (ignored when num_workers=0)."""
    seq_length: int | None = None
    """The packed bin length the recipe is written for (`prepare --seq-length`). `plan` reads it
    before the data exists; training refuses data prepared at another length. None: any."""

    def __post_init__(self) -> None:
        self.datasets = [_as_spec(d) for d in self.datasets]
        self.stages = [s if isinstance(s, StageSpec) else StageSpec(**dict(s)) for s in self.stages]
        if any(s.samples is not None and s.epochs is not None or not s.bounded for s in self.stages):
            raise UserError("each data.stages[] entry needs exactly one of samples or epochs")
        check_int("data.seed", self.seed, 0)
        check_int("data.seq_length", self.seq_length, 1, "the prepared data's --seq-length", optional=True)
        if self.stages and (self.path or self.datasets):
            raise UserError("data.stages replaces data.path/data.datasets; set only one of them")
        if self.path and self.datasets:
            raise UserError("set data.path (one dataset) or data.datasets (a mixture), not both")
        _check_weights(self.datasets)
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"data.val_fraction={self.val_fraction} must be in [0, 1)")
        if self.val_fraction and self.val_path:
            raise UserError("set data.val_fraction or data.val_path, not both")
        if self.num_workers < 0 or self.prefetch_factor < 1:
            raise UserError("data.num_workers must be >= 0 and data.prefetch_factor >= 1")

    def resolved_stages(self) -> list[StageSpec]:
        """The curriculum as stages; the default single stage has samples=epochs=None (unbounded)."""
        if self.stages:
            return list(self.stages)
        datasets = list(self.datasets) or ([DatasetSpec(path=self.path)] if self.path else [])
        if not datasets:
            raise UserError("no training data: set data.path, data.datasets or data.stages")
        return [StageSpec(datasets=datasets)]  # neither samples nor epochs: unbounded


def _as_spec(d: Any) -> DatasetSpec:
    if isinstance(d, DatasetSpec):
        return d
    if isinstance(d, str):
        return DatasetSpec(path=d)
    return DatasetSpec(**dict(d))


def _check_weights(specs: list[DatasetSpec]) -> None:
    given = [s.weight is not None for s in specs]
    if any(given) and not all(given):
        missing = [s.path for s in specs if s.weight is None]
        raise UserError(f"data: weights given for some datasets but not for {missing}; give all or none")


def as_data_config(cfg: Any) -> DataConfig:
    """Accept a DataConfig, an omegaconf DictConfig or a plain dict."""
    if isinstance(cfg, DataConfig):
        return cfg

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    known = {f.name for f in dataclasses.fields(DataConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise UserError(f"unknown data config keys {unknown}; known: {sorted(known)}")
    return DataConfig(**cfg)
