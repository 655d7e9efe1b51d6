"""Packing documents into bins of seq_length tokens: first-fit-decreasing in a shuffle window.

Documents are padded to the pad multiple CP and SP need (each CP rank takes 2 zigzag chunks of
every document; SP splits every chunk over TP ranks), then packed whole: a document is never
split across bins, and a bin's padded lengths never exceed seq_length. Only a window of
documents is held at a time, so memory is bounded; within a window the bins are written in a
seeded random order, so the output depends only on the inputs, the config and the seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

PackedDoc = tuple[np.ndarray, np.ndarray, int]  # (tokens int32 padded, mask uint8 padded, unpadded length)


def padded_length(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pad_document(tokens: np.ndarray, mask: np.ndarray, multiple: int, pad_id: int) -> PackedDoc:
    """Pad with pad_id (mask 0) up to a multiple of `multiple`."""
    n = len(tokens)
    extra = padded_length(n, multiple) - n
    if extra:
        tokens = np.concatenate([tokens, np.full(extra, pad_id, dtype=np.int32)])
        mask = np.concatenate([mask, np.zeros(extra, dtype=np.uint8)])
    return tokens.astype(np.int32, copy=False), mask.astype(np.uint8, copy=False), n


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins as lists of indices into `lengths`. Longest first (ties by index, for determinism);
    each goes into the first open bin with room, else opens a new one."""
    assert all(0 < x <= capacity for x in lengths), "every length must fit an empty bin"
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    room = np.empty(len(lengths), dtype=np.int64)  # room[b]: free tokens in bin b
    bins: list[list[int]] = []
    for i in order:
        n = lengths[i]
        fits = room[:len(bins)] >= n
        b = int(fits.argmax()) if len(bins) else 0
        if not len(bins) or not fits[b]:
            b = len(bins)
            bins.append([])
            room[b] = capacity
        bins[b].append(i)
        room[b] -= n
    return bins


class WindowPacker:
    """Collects padded documents; every `window` documents, packs them and yields their bins."""

    def __init__(self, seq_length: int, window: int, seed: int):
        self.seq_length, self.window, self.seed = seq_length, window, seed
        self._docs: list[PackedDoc] = []
        self._windows = 0

    def add(self, doc: PackedDoc) -> Iterator[list[PackedDoc]]:
        assert len(doc[0]) <= self.seq_length, "document longer than a bin: the length policy must run first"
        self._docs.append(doc)
        if len(self._docs) >= self.window:
            yield from self._pack()

    def __len__(self) -> int:
        """Documents waiting to be packed."""
        return len(self._docs)

    def flush(self) -> Iterator[list[PackedDoc]]:
        if self._docs:
            yield from self._pack()

    def _pack(self) -> Iterator[list[PackedDoc]]:
        docs, self._docs = self._docs, []
        bins = first_fit_decreasing([len(d[0]) for d in docs], self.seq_length)
        rng = np.random.default_rng([self.seed, self._windows])
        self._windows += 1
        for b in rng.permutation(len(bins)):
            yield [docs[i] for i in bins[b]]


class OriginPacker:
    """One WindowPacker per origin, so a bin never mixes origins (each origin is a sub-dataset
    the trainer can weight). Together they hold at most `window` documents: when that many are
    waiting, the origin holding the most is packed. Memory stays bounded however many origins
    there are, and with one origin this is exactly a WindowPacker."""

    def __init__(self, seq_length: int, window: int, seed: int):
        self.seq_length, self.window, self.seed = seq_length, window, seed
        self._packers: dict[int, WindowPacker] = {}

    def add(self, origin: int, doc: PackedDoc) -> Iterator[tuple[int, list[PackedDoc]]]:
        packer = self._packers.get(origin)
        if packer is None:
            packer = self._packers[origin] = WindowPacker(self.seq_length, self.window, self.seed + origin)
        for b in packer.add(doc):
            yield origin, b
        if sum(len(p) for p in self._packers.values()) >= self.window:
            fullest = max(self._packers, key=lambda k: (len(self._packers[k]), -k))
            for b in self._packers[fullest].flush():
                yield fullest, b

    def flush(self) -> Iterator[tuple[int, list[PackedDoc]]]:
        for origin in sorted(self._packers):
            for b in self._packers[origin].flush():
                yield origin, b
