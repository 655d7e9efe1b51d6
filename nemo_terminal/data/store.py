"""The prepared dataset on disk: packed bins of documents, written once, memory-mapped for reading.

Layout of a dataset directory (all arrays little-endian .npy):

    manifest.json   format, tokenizer_hash, seq_length, pad_multiple, cp/tp/sp, pad_id, seed, thinking,
                    config, inputs, num_bins, num_docs, num_tokens (written last: its presence
                    marks a complete dataset)
    tokens.npy      int32 [N]    every document's tokens, each padded to pad_multiple, bin after bin
    loss_mask.npy   uint8 [N]    1 where the token is a training target
    docs.npy        int64 [D,3]  per document: (start offset into tokens, unpadded len, padded len)
    bins.npy        int64 [B+1]  bin i holds docs[bins[i]:bins[i+1]]
    bin_origin.npy  int32 [B]    index into manifest["origins"] of bin i's origin (only when the
                                 manifest lists origins: each bin holds documents of one origin)
    report.json     written by prepare (optional for readers)

The writer streams: arrays are appended as raw bytes behind a fixed-size .npy header that is
filled in at close, so memory stays bounded whatever the corpus size, and the directory appears
under its final name only once complete (atomic rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nemo_terminal.errors import UserError
from nemo_terminal.output_dir import publish

FORMAT = "nemo_terminal.packed/1"
MANIFEST = "manifest.json"
REPORT = "report.json"
BIN_ORIGIN = "bin_origin.npy"
_ARRAYS = {  # name -> (dtype, trailing shape)
    "tokens": (np.dtype("<i4"), ()),
    "loss_mask": (np.dtype("u1"), ()),
    "docs": (np.dtype("<i8"), (3,)),
    "bins": (np.dtype("<i8"), ()),
}
_HEADER_BYTES = 128  # fixed .npy v1.0 header size, so the header can be written after the data
_REQUIRED = ("tokenizer_hash", "seq_length", "pad_multiple", "pad_id")


def _write_npy_header(f, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """numpy's own .npy v1.0 header, at the file's current position. numpy pads it so its length
    does not depend on the row count (room for 21 digits), which lets the data go first: for
    these dtypes and 1-2 dimensions it is always _HEADER_BYTES long (checked, not assumed)."""
    start = f.tell()
    np.lib.format.write_array_header_1_0(f, {"descr": dtype.str, "fortran_order": False, "shape": tuple(shape)})
    assert f.tell() - start == _HEADER_BYTES, (dtype, shape, f.tell() - start)


@dataclass
class Bin:
    """One packed bin, as read from disk (views into the memory map where possible)."""

    tokens: np.ndarray
    """int32 [n]: the bin's documents back to back, each padded to the dataset's pad_multiple."""
    loss_mask: np.ndarray
    """uint8 [n]: 1 where tokens[t] is a training target."""
    doc_lens: np.ndarray
    """int64 [k]: unpadded document lengths."""
    doc_lens_padded: np.ndarray
    """int64 [k]: padded document lengths; they sum to n."""


class PackedDatasetWriter:
    """Streams bins into a new dataset directory; publishes it atomically on success.

    Use as a context manager. `manifest` must hold at least tokenizer_hash, seq_length,
    pad_multiple and pad_id by the time the context exits (`update_manifest` can add them late).
    """

    def __init__(self, out_dir: str | os.PathLike, manifest: dict[str, Any], force: bool = False):
        self.out_dir = Path(out_dir)
        self.force = force
        self.manifest: dict[str, Any] = {"format": FORMAT, **manifest}
        self.tmp_dir = self.out_dir.parent / f".{self.out_dir.name}.tmp-{os.getpid()}"
        self._files: dict[str, Any] = {}
        self._counts = {"tokens": 0, "docs": 0}
        self._bins = [0]
        self._bin_origins: list[int] = []

    def __enter__(self) -> PackedDatasetWriter:
        if self.out_dir.exists() and not self.force:
            raise UserError(f"{self.out_dir} already exists; pass --force to overwrite it or choose another --out")
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.mkdir()
        for name in ("tokens", "loss_mask", "docs"):
            f = open(self.tmp_dir / f"{name}.npy", "wb")
            f.write(b"\0" * _HEADER_BYTES)
            self._files[name] = f
        return self

    def update_manifest(self, **fields: Any) -> None:
        """Add fields known only at the end (e.g. counts, timings)."""
        self.manifest.update(fields)

    def write_json(self, name: str, obj: Any) -> None:
        """Write a side file (report.json, ...) into the dataset directory."""
        assert name != MANIFEST, "the manifest is written by close()"
        with open(self.tmp_dir / name, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)

    def add_bin(self, docs: Sequence[tuple[np.ndarray, np.ndarray, int]], origin: int = 0) -> None:
        """Append one bin: a list of (tokens int32 already padded, mask uint8, unpadded length),
        all from origin number `origin` (an index into manifest["origins"], when there are any)."""
        if not docs:
            raise ValueError("a bin must hold at least one document")
        multiple = self.manifest.get("pad_multiple")
        seq_length = self.manifest.get("seq_length")
        rows, total = [], 0
        for tokens, mask, length in docs:
            n = len(tokens)
            if len(mask) != n or not 0 < length <= n:
                raise ValueError(f"document of {n} tokens: mask has {len(mask)}, unpadded length {length}")
            if multiple and n % multiple:
                raise ValueError(f"document of {n} padded tokens is not a multiple of pad_multiple={multiple}")
            rows.append((self._counts["tokens"] + total, int(length), n))
            total += n
            self._files["tokens"].write(np.ascontiguousarray(tokens, dtype="<i4"))  # the buffer itself: no copy
            self._files["loss_mask"].write(np.ascontiguousarray(mask, dtype="u1"))
        if seq_length and total > seq_length:
            raise ValueError(f"bin of {total} padded tokens exceeds seq_length={seq_length}")
        self._files["docs"].write(np.asarray(rows, dtype="<i8").tobytes())
        self._counts["tokens"] += total
        self._counts["docs"] += len(docs)
        self._bins.append(self._counts["docs"])
        self._bin_origins.append(int(origin))

    def _close_arrays(self) -> None:
        shapes = {"tokens": (self._counts["tokens"],), "loss_mask": (self._counts["tokens"],),
                  "docs": (self._counts["docs"], 3)}
        for name, f in self._files.items():
            f.seek(0)
            _write_npy_header(f, _ARRAYS[name][0], shapes[name])
            f.close()
        self._files.clear()
        np.save(self.tmp_dir / "bins.npy", np.asarray(self._bins, dtype="<i8"))
        if "origins" in self.manifest:
            assert all(0 <= o < len(self.manifest["origins"]) for o in self._bin_origins), "bin of an unlisted origin"
            np.save(self.tmp_dir / BIN_ORIGIN, np.asarray(self._bin_origins, dtype="<i4"))

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            for f in self._files.values():
                f.close()
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            return
        try:
            missing = [k for k in _REQUIRED if k not in self.manifest]
            if missing:
                raise ValueError(f"manifest lacks {missing}")
            self._close_arrays()
            self.manifest.update(num_bins=len(self._bins) - 1, num_docs=self._counts["docs"],
                                 num_tokens=self._counts["tokens"])
            with open(self.tmp_dir / MANIFEST, "w") as f:  # last: marks the dataset complete
                json.dump(self.manifest, f, indent=2, sort_keys=True)
            publish(self.tmp_dir, self.out_dir)  # the old dataset is moved aside, then removed
        except BaseException:
            for f in self._files.values():
                f.close()
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            raise


class PackedDataset:
    """Read-only, memory-mapped view of a prepared dataset; `bin(i)` costs O(bin) and no copies."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not self.path.is_dir():
            raise UserError(f"{self.path} is not a directory; run `nemo-terminal prepare` to create the dataset")
        if not manifest_path.exists():
            raise UserError(f"incomplete dataset {self.path}: no {MANIFEST}; re-run prepare")
        with open(manifest_path) as f:
            self.manifest: dict[str, Any] = json.load(f)
        if self.manifest.get("format") != FORMAT:
            raise UserError(f"{manifest_path}: format {self.manifest.get('format')!r} is not {FORMAT!r}; "
                            f"re-run prepare with this version of nemo_terminal")
        try:
            arrays = {name: np.load(self.path / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
        except (OSError, ValueError) as e:
            raise UserError(f"incomplete or corrupt dataset {self.path}: {e}; re-run prepare") from e
        self.tokens, self.loss_mask = arrays["tokens"], arrays["loss_mask"]
        self.docs = np.asarray(arrays["docs"])  # small: D x 3 int64, kept in memory for fast lookups
        self.bins = np.asarray(arrays["bins"])
        self.bin_origin: np.ndarray | None = None  # datasets written before origins have none
        if "origins" in self.manifest:
            try:
                self.bin_origin = np.load(self.path / BIN_ORIGIN)
            except (OSError, ValueError) as e:
                raise UserError(f"incomplete or corrupt dataset {self.path}: {e}; re-run prepare") from e
            if len(self.bin_origin) != len(self.bins) - 1 or (
                    len(self.bin_origin) and not 0 <= self.bin_origin.min() <= self.bin_origin.max()
                    < len(self.manifest["origins"])):
                raise UserError(f"corrupt dataset {self.path}: {BIN_ORIGIN} disagrees with {MANIFEST}; re-run prepare")
        self._validate()
        self.report: dict[str, Any] | None = None
        if (self.path / REPORT).exists():
            with open(self.path / REPORT) as f:
                self.report = json.load(f)

    def _validate(self) -> None:
        m, docs, bins = self.manifest, self.docs, self.bins
        ok = (
            self.tokens.dtype == np.int32 and self.loss_mask.dtype == np.uint8
            and len(self.tokens) == len(self.loss_mask) == m.get("num_tokens")
            and docs.ndim == 2 and docs.shape[1] == 3 and len(docs) == m.get("num_docs")
            and len(bins) == m.get("num_bins", -2) + 1 and bins[0] == 0 and bins[-1] == len(docs)
            and bool(np.all(np.diff(bins) > 0))
        )
        if ok and len(docs):
            ends = docs[:, 0] + docs[:, 2]
            ok = docs[0, 0] == 0 and ends[-1] == len(self.tokens) and bool(np.all(docs[1:, 0] == ends[:-1]))
        if not ok:
            raise UserError(f"corrupt dataset {self.path}: arrays disagree with {MANIFEST}; re-run prepare")

    def __len__(self) -> int:
        return len(self.bins) - 1

    def __reduce__(self):  # DataLoader workers reopen the memory map instead of copying the data
        return (PackedDataset, (str(self.path),))

    @property
    def origins(self) -> list[str]:
        """Names of the sub-datasets (e.g. `skill_based_medium/networking`); [] for older datasets."""
        return list(self.manifest.get("origins") or [])

    def origin_bins(self, name: str) -> np.ndarray:
        """Sorted ids of the bins of origin `name`, or of every origin under it when `name` is a
        prefix ending at a `/` boundary (`skill_based_medium` selects all its domains)."""
        chosen = [i for i, o in enumerate(self.origins) if o == name or o.startswith(name.rstrip("/") + "/")]
        if not chosen:
            have = self.origins or "no origins (prepared before origins were recorded: prepare it again)"
            raise UserError(f"{self.path}: no origin {name!r}; it has {have}")
        return np.flatnonzero(np.isin(self.bin_origin, chosen))

    @property
    def seq_length(self) -> int:
        return int(self.manifest["seq_length"])

    @property
    def pad_id(self) -> int:
        return int(self.manifest["pad_id"])

    def bin(self, i: int) -> Bin:
        if not 0 <= i < len(self):
            raise IndexError(f"bin {i} out of range [0, {len(self)})")
        d = self.docs[self.bins[i]:self.bins[i + 1]]
        start, stop = int(d[0, 0]), int(d[-1, 0] + d[-1, 2])
        return Bin(tokens=self.tokens[start:stop], loss_mask=self.loss_mask[start:stop],
                   doc_lens=d[:, 1], doc_lens_padded=d[:, 2])

    def bin_token_span(self, i: int) -> tuple[int, int]:
        """[start, stop) of bin i in tokens.npy; used by benchmarks as the raw-read baseline."""
        d0, d1 = self.docs[self.bins[i]], self.docs[self.bins[i + 1] - 1]
        return int(d0[0]), int(d1[0] + d1[2])


def dataset_fingerprint(path: str | os.PathLike) -> str:
    """A short content id: the manifest (inputs' sha256, config, counts) plus array file sizes.

    Cheap (no pass over the tokens), and changes whenever prepare is re-run with other inputs or
    settings; checkpoints record it so a resume can notice the data changed underneath.
    """
    p = Path(path)
    h = hashlib.sha256()
    h.update((p / MANIFEST).read_bytes())
    for name in sorted(_ARRAYS):
        h.update(f"{name}:{(p / f'{name}.npy').stat().st_size};".encode())
    return h.hexdigest()[:16]


def write_random_dataset(out_dir: str | os.PathLike, num_bins: int, seq_length: int, pad_multiple: int = 1,
                         seed: int = 0, max_doc: int | None = None, vocab: int = 1000, pad_id: int = 0,
                         tokenizer_hash: str = "test-tokenizer", force: bool = False) -> Path:
    """A valid dataset of random documents (varied lengths, partly filled bins), for tests and benchmarks.

    Real tokens are in [1, vocab) so they never equal pad_id=0; masks are random bits on real tokens.
    """
    rng = np.random.default_rng(seed)
    max_doc = max_doc or seq_length
    manifest = dict(tokenizer_hash=tokenizer_hash, seq_length=seq_length, pad_multiple=pad_multiple,
                    pad_id=pad_id, cp_size=1, tp_size=1, sequence_parallel=False, seed=seed,
                    config={"synthetic": True}, inputs=[])
    with PackedDatasetWriter(out_dir, manifest, force=force) as w:
        for _ in range(num_bins):
            docs, free = [], seq_length
            while free >= pad_multiple and (not docs or rng.random() < 0.8):
                length = int(rng.integers(1, min(max_doc, free) + 1))
                padded = -(-length // pad_multiple) * pad_multiple
                if padded > free:
                    break
                tokens = np.full(padded, pad_id, dtype=np.int32)
                tokens[:length] = rng.integers(1, vocab, length, dtype=np.int32)
                mask = np.zeros(padded, dtype=np.uint8)
                mask[:length] = rng.integers(0, 2, length, dtype=np.uint8)
                docs.append((tokens, mask, length))
                free -= padded
            w.add_bin(docs)
    return Path(out_dir)
