"""TerminalDataModule: prepared datasets -> the exact micro-batches each DP/CP rank must see.

Sample positions are global: the global batch at step s is samples [s·G, (s+1)·G) of the
schedule (G = global batch size), whatever the DP size. DP rank r takes the contiguous slice
[r·G/dp, (r+1)·G/dp) of it, cut into micro-batches of `micro_batch_size` bins, and reads only
those bins. CP ranks of one DP rank read the same bins and keep their zigzag share.

Resume state is a position (plus checks), so it is independent of DataLoader workers, and a
state saved at a step boundary loads at any DP size or global batch size (the trainer saves after
optimizer steps, so that is the usual case); only a mid-step state demands the same layout.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nemo_terminal.data.loader.batches import build_micro_batch
from nemo_terminal.data.loader.config import DataConfig, as_data_config
from nemo_terminal.data.loader.sampler import Schedule, StageMix, apportion, split_bins
from nemo_terminal.data.store import PackedDataset, dataset_fingerprint
from nemo_terminal.errors import UserError
from nemo_terminal.runtime.device import current_device
from nemo_terminal.runtime.parallel import micro_batches_per_step

log = logging.getLogger(__name__)
STATE_VERSION = 1


class _TrainPicks:
    """Rank-local micro-batch index q -> the (dataset, bin) pairs of that micro-batch."""

    def __init__(self, schedule: Schedule, base: int, gbs: int, mbs: int, dp_rank: int, dp_size: int):
        self.schedule, self.base, self.gbs, self.mbs = schedule, base, gbs, mbs
        self.rank_offset = dp_rank * (gbs // dp_size)
        self.per_step = gbs // (mbs * dp_size)

    def __call__(self, q: int) -> list[tuple[int, int]]:
        step, m = divmod(q, self.per_step)
        first = self.base + step * self.gbs + self.rank_offset + m * self.mbs
        return self.schedule.samples(range(first, first + self.mbs))


class _ValPicks:
    """Validation micro-batch j of this rank: global micro-batch j·dp + r of the sorted val bins."""

    def __init__(self, pairs: np.ndarray, mbs: int, dp_rank: int, dp_size: int):
        self.pairs, self.mbs, self.dp_rank, self.dp_size = pairs, mbs, dp_rank, dp_size

    def __call__(self, j: int) -> list[tuple[int, int]]:
        first = (j * self.dp_size + self.dp_rank) * self.mbs
        return [(int(d), int(b)) for d, b in self.pairs[first:first + self.mbs]]


class _MicroBatches(torch.utils.data.Dataset):
    """Map-style: index -> built micro-batch. DataLoader keeps index order whatever the workers."""

    def __init__(self, datasets: list[PackedDataset], picks, seq_length: int, pad_id: int,
                 cp_size: int, cp_rank: int):
        self.datasets, self.picks = datasets, picks
        self.seq_length, self.pad_id, self.cp_size, self.cp_rank = seq_length, pad_id, cp_size, cp_rank

    def __getitem__(self, index: int) -> dict[str, Any]:
        bins = [self.datasets[d].bin(b) for d, b in self.picks(index)]
        return build_micro_batch(bins, self.seq_length, self.pad_id, self.cp_size, self.cp_rank)


class _Indices:
    """Sampler over [start, stop); stop=None counts forever."""

    def __init__(self, start: int, stop: int | None):
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        q = self.start
        while self.stop is None or q < self.stop:
            yield q
            q += 1


class TerminalDataModule:
    """NeMo-2-style data module: setup, train/val dataloaders, state_dict/load_state_dict."""

    def __init__(self, cfg: DataConfig | Any, *, global_batch_size: int, micro_batch_size: int,
                 dp_rank: int, dp_size: int, cp_rank: int = 0, cp_size: int = 1,
                 required_pad_multiple: int = 1, tokenizer_hash: str | None = None):
        self.cfg = as_data_config(cfg)
        micro_batches = micro_batches_per_step(global_batch_size, micro_batch_size, dp_size)
        assert 0 <= dp_rank < dp_size and 0 <= cp_rank < cp_size
        self.gbs, self.mbs = global_batch_size, micro_batch_size
        self.dp_rank, self.dp_size, self.cp_rank, self.cp_size = dp_rank, dp_size, cp_rank, cp_size
        self.required_pad_multiple, self.tokenizer_hash = required_pad_multiple, tokenizer_hash
        self.micro_batches_per_step = micro_batches
        self.datasets: list[PackedDataset] = []
        self._base = 0       # global sample position where rank-local micro-batch 0 starts
        self._consumed = 0   # micro-batches handed to the trainer since _base
        self._pending_state: dict | None = None

    # ---- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        """Open and check every dataset, resolve stages, fraction subsets and the validation set."""
        stages = self.cfg.resolved_stages()
        index: dict[str, int] = {}
        for spec in [d for s in stages for d in s.datasets]:
            self._open(spec.path, index)
        val_index = self._open(self.cfg.val_path, index) if self.cfg.val_path else None
        self.seq_length = self._agree("seq_length")
        if self.cfg.seq_length is not None and self.cfg.seq_length != self.seq_length:
            raise UserError(f"data.seq_length={self.cfg.seq_length}, but the data was prepared with "
                            f"--seq-length {self.seq_length}; prepare it again or fix data.seq_length")
        self.pad_id = self._agree("pad_id")
        self.thinking = self._thinking()
        self.fingerprints = [dataset_fingerprint(d.path) for d in self.datasets]
        keys = [int(fp[:15], 16) for fp in self.fingerprints]
        mixes, val_pairs = [], {}
        for s_i, stage in enumerate(stages):
            ids, pools, sizes = [], [], []
            for spec in stage.datasets:
                i = index[str(Path(spec.path).resolve())]
                val_frac = self.cfg.val_fraction if i != val_index else 0.0
                allowed = self.datasets[i].origin_bins(spec.origin) if spec.origin else None
                train, val = split_bins(len(self.datasets[i]), self.cfg.seed, keys[i], val_frac, spec.fraction,
                                        allowed)
                if len(train) == 0:
                    where = f"{spec.path} origin {spec.origin!r}" if spec.origin else spec.path
                    raise UserError(f"{where}: no training bins left after val_fraction/fraction")
                ids.append(i)
                pools.append(train)
                sizes.append(len(train))
                val_pairs[i] = val
            weights = [s.weight for s in stage.datasets]
            counts = apportion(sizes if weights[0] is None else weights, int(sum(sizes)))
            total = stage.samples if stage.samples is not None else (
                None if stage.epochs is None else max(1, int(round(stage.epochs * sum(sizes)))))
            mixes.append(StageMix(datasets=ids, train_bins=pools, counts=counts, total=total))
            log.info("data stage %d: %s bins/epoch from %s, %s samples", s_i, int(sum(sizes)),
                     [self.datasets[i].path.name for i in ids], total or "unbounded")
        self.schedule = Schedule(mixes, self.cfg.seed)
        if val_index is not None:
            val_pairs = {val_index: np.arange(len(self.datasets[val_index]))}
        self.val_pairs = np.array([(i, b) for i in sorted(val_pairs) for b in val_pairs[i]],
                                  dtype=np.int64).reshape(-1, 2)
        if self.steps_per_epoch < 1:
            raise UserError(f"global_batch_size={self.gbs} exceeds the {self._epoch_samples()} training "
                            f"bins of one epoch; lower train.global_batch_size or add data")
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self.load_state_dict(state)

    def _open(self, path: str, index: dict[str, int]) -> int:
        key = str(Path(path).resolve())
        if key in index:
            return index[key]
        ds = PackedDataset(path)
        self._check(ds)
        index[key] = len(self.datasets)
        self.datasets.append(ds)
        return index[key]

    def _check(self, ds: PackedDataset) -> None:
        m = ds.manifest
        if self.tokenizer_hash is not None and m["tokenizer_hash"] != self.tokenizer_hash:
            raise UserError(f"{ds.path}: prepared with tokenizer {m['tokenizer_hash']!r}, but the model's "
                            f"tokenizer is {self.tokenizer_hash!r}; re-run prepare with --tokenizer set to the model's "
                            "tokenizer directory")
        stored, need = int(m["pad_multiple"]), self.required_pad_multiple
        if stored % need or ds.seq_length % stored:
            raise UserError(
                f"{ds.path}: documents are padded to multiples of {stored} (prepared for cp_size="
                f"{m.get('cp_size')}, tp_size={m.get('tp_size')}, sequence_parallel={m.get('sequence_parallel')}), "
                f"but this parallel layout needs a multiple of {need} dividing seq_length={ds.seq_length}; "
                f"re-run prepare with --cp-size {self.cp_size} (and the training --tp-size / --sequence-parallel)")

    def _thinking(self) -> str | None:
        """The thinking policy every dataset was prepared with (None: prepared before it was
        recorded). The exported chat template renders prompts by it, so one run has one policy."""
        values = {str(d.path): d.manifest.get("thinking", d.manifest.get("config", {}).get("thinking"))
                  for d in self.datasets}
        if len(set(values.values())) != 1:
            raise UserError(f"datasets were prepared with different thinking policies {values}; a model is served "
                            "with one chat template, so prepare them all with the same thinking=")
        return next(iter(values.values()))

    def _agree(self, key: str) -> int:
        values = {str(d.path): int(d.manifest[key]) for d in self.datasets}
        if len(set(values.values())) != 1:
            raise UserError(f"datasets disagree on {key}: {values}; "
                            f"prepare them with the same --{key.replace('_', '-')}")
        return next(iter(values.values()))

    # ---- sizes -------------------------------------------------------------------------------
    def _epoch_samples(self) -> int:
        return self.schedule.total or self.schedule.stages[0].epoch_len

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one pass over the mixed data (for a curriculum: over all stages)."""
        return self._epoch_samples() // self.gbs

    @property
    def max_steps(self) -> int | None:
        """Steps until a finite curriculum ends (counted from step 0); None when unbounded."""
        return None if self.schedule.total is None else self.schedule.total // self.gbs

    # ---- loaders -----------------------------------------------------------------------------
    def _loader(self, picks, start: int, stop: int | None) -> torch.utils.data.DataLoader:
        source = _MicroBatches(self.datasets, picks, self.seq_length, self.pad_id, self.cp_size, self.cp_rank)
        workers = self.cfg.num_workers
        return torch.utils.data.DataLoader(
            source, batch_size=None, sampler=_Indices(start, stop), num_workers=workers,
            prefetch_factor=self.cfg.prefetch_factor if workers else None, pin_memory=current_device().pin_memory)

    def train_dataloader(self) -> Iterator[dict[str, Any]]:
        """Micro-batches from the current position on; unbounded unless the curriculum is finite."""
        picks = _TrainPicks(self.schedule, self._base, self.gbs, self.mbs, self.dp_rank, self.dp_size)
        stop = None
        if self.schedule.total is not None:
            stop = (self.schedule.total - self._base) // self.gbs * self.micro_batches_per_step
        return self._track(self._loader(picks, self._consumed, stop))

    def _track(self, loader) -> Iterator[dict[str, Any]]:
        for batch in loader:
            self._consumed += 1  # counted before the trainer sees it: state_dict() then includes it
            yield batch

    def val_dataloader(self) -> Iterator[dict[str, Any]]:
        """This DP rank's share of the validation bins; every rank gets the same count (tail dropped)."""
        per_rank = len(self.val_pairs) // (self.mbs * self.dp_size)
        if len(self.val_pairs) and not per_rank:
            log.warning("validation set of %d bins is smaller than micro_batch_size*dp; skipping it",
                        len(self.val_pairs))
        picks = _ValPicks(self.val_pairs, self.mbs, self.dp_rank, self.dp_size)
        return iter(self._loader(picks, 0, per_rank))

    # ---- state -------------------------------------------------------------------------------
    def _position(self) -> tuple[int, int]:
        """(global samples of completed steps, micro-batches consumed within the current step)."""
        steps, micro = divmod(self._consumed, self.micro_batches_per_step)
        return self._base + steps * self.gbs, micro

    def state_dict(self) -> dict[str, Any]:
        """Plain ints/strs/lists: the exact position after the micro-batches consumed so far.

        There is no mutable RNG: every shuffle is a function of `seed` and the position, so
        (seed, consumed_samples, micro_in_step) is the whole random state.
        """
        consumed, micro = self._position()
        done = self.schedule.total is not None and consumed >= self.schedule.total
        stage, epoch, sample = (len(self.schedule.stages), 0, 0) if done else self.schedule.locate(consumed)
        return {
            "version": STATE_VERSION, "consumed_samples": int(consumed), "micro_in_step": int(micro),
            "stage": int(stage), "epoch": int(epoch), "sample": int(sample), "seed": int(self.cfg.seed),
            "global_batch_size": self.gbs, "micro_batch_size": self.mbs, "dp_size": self.dp_size,
            "datasets": list(self.fingerprints),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where `state` stopped; see the module docstring for layout changes."""
        if not hasattr(self, "schedule"):
            self._pending_state = dict(state)
            return
        if state.get("version") != STATE_VERSION:
            raise UserError(f"data state version {state.get('version')} is not {STATE_VERSION}; start a fresh run")
        if state["seed"] != self.cfg.seed or state["datasets"] != self.fingerprints:
            raise UserError(f"checkpoint was taken with data.seed={state['seed']} and datasets {state['datasets']}; "
                            f"now data.seed={self.cfg.seed} and {self.fingerprints}; restore the original "
                            f"data settings to resume, or start a fresh run")
        layout = (state["global_batch_size"], state["micro_batch_size"], state["dp_size"])
        if state["micro_in_step"] and layout != (self.gbs, self.mbs, self.dp_size):
            raise UserError(f"data state was saved mid-step with (global batch, micro batch, dp) = {layout}; "
                            f"resume with that layout, or from a checkpoint taken at a step boundary")
        consumed = int(state["consumed_samples"])
        if self.schedule.total is None or consumed < self.schedule.total:
            expect = tuple(int(state[k]) for k in ("stage", "epoch", "sample"))
            if self.schedule.locate(consumed) != expect:
                raise UserError(f"data state position {expect} does not match this data config; "
                                f"restore the original data.stages / fractions to resume")
        self._base, self._consumed = consumed, int(state["micro_in_step"])
