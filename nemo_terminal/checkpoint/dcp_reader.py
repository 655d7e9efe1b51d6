"""Single-process reads of tensor regions from a torch_dist (torch.distributed.checkpoint) directory.

megatron-core's torch_dist format is a plain DCP checkpoint: `.metadata` lists every tensor's
global shape and its stored chunks (offsets, sizes), and where each chunk's `torch.save` blob
lies (file, byte offset, length). `CheckpointReader` reads that metadata once and then, for a
region of one tensor (a whole tensor, or one layer of a layer-stacked one), `torch.load`s only
the chunks that overlap it. No process group, no common.pt, no planner.

Memory: `torch.load` reads a chunk's bytes straight into the tensor's storage (through
`readinto` on a view of the file). When one stored chunk is exactly the region asked for (the
usual case for checkpoints written by import), that tensor is returned as is; otherwise the
region is preallocated and each overlapping chunk is copied into it and dropped.
`row_byte_ranges` instead says where rows of a region lie as raw bytes in the files, so export
can copy them file to file without loading them at all.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from pathlib import Path
from typing import NamedTuple

import torch
from torch.distributed.checkpoint.metadata import MetadataIndex, TensorStorageMetadata

from nemo_terminal.checkpoint.safe_pickle import read_dcp_metadata
from nemo_terminal.errors import UserError


class _FileSlice(io.RawIOBase):
    """A read-only, seekable view of bytes [offset, offset + length) of an open file."""

    def __init__(self, f, offset: int, length: int):
        super().__init__()
        self._f, self._start, self._len = f, offset, length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._len}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b) -> int:
        view = memoryview(b).cast("B")
        n = max(0, min(len(view), self._len - self._pos))
        self._f.seek(self._start + self._pos)
        done = 0
        while done < n:
            got = self._f.readinto(view[done:n])
            if not got:
                break
            done += got
        self._pos += done
        return done


class ByteRange(NamedTuple):
    """`nbytes` raw tensor bytes at byte `offset` of file `path`."""

    path: Path
    offset: int
    nbytes: int


class CheckpointReader:
    """The tensors of one torch_dist checkpoint directory (`iter_XXXXXXX`); optimizer and other
    entries are listed like any other key and simply never read unless asked for."""

    def __init__(self, it: str | Path):
        self.root = Path(it)
        backend = _sharded_backend(self.root)
        if backend not in (None, "torch_dist"):
            raise UserError(f"{self.root}: checkpoint format {backend!r} is not supported (only torch_dist)")
        md = read_dcp_metadata(self.root)  # the restricted unpickler: a UserError if it is unsafe or corrupt
        self.tensors = {k: v for k, v in md.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)}
        self._storage = md.storage_data
        self._located: dict[tuple[str, tuple[int, ...]], tuple[Path, int] | None] = {}

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.tensors[key].size)

    def dtype(self, key: str) -> torch.dtype:
        return self.tensors[key].properties.dtype

    def read(self, key: str, layer: int | None = None) -> torch.Tensor:
        """The whole tensor `key`, or (layer given) its slice `[layer]` along axis 0."""
        shape = self.shape(key)
        if layer is None:
            offsets, sizes = (0,) * len(shape), shape
        else:
            offsets, sizes = (layer,) + (0,) * (len(shape) - 1), (1,) + shape[1:]
        region = self._read_region(key, offsets, sizes)
        return region if layer is None else region[0]

    def _read_region(self, key: str, offsets: tuple[int, ...], sizes: tuple[int, ...]) -> torch.Tensor:
        meta = self.tensors[key]
        overlapping = []
        for chunk in meta.chunks:
            c_off, c_size = tuple(chunk.offsets), tuple(chunk.sizes)
            if c_off == offsets and c_size == sizes:
                return self._load_chunk(key, c_off, c_size)
            lo = [max(a, b) for a, b in zip(offsets, c_off, strict=False)]
            hi = [min(a + s, b + t) for a, s, b, t in zip(offsets, sizes, c_off, c_size, strict=False)]
            if all(h > low for low, h in zip(lo, hi, strict=False)):
                overlapping.append((c_off, c_size, lo, hi))
        out = torch.empty(sizes, dtype=meta.properties.dtype)
        covered = 0
        for c_off, c_size, lo, hi in overlapping:
            chunk = self._load_chunk(key, c_off, c_size)
            src = chunk[tuple(slice(low - c, h - c) for low, h, c in zip(lo, hi, c_off, strict=False))]
            out[tuple(slice(low - o, h - o) for low, h, o in zip(lo, hi, offsets, strict=False))].copy_(src)
            covered += math.prod(h - low for low, h in zip(lo, hi, strict=False))
            del chunk, src
        if covered != math.prod(sizes):
            raise UserError(f"{self.root}: the checkpoint holds only part of tensor {key} at offsets "
                            f"{list(offsets)} (size {list(sizes)}): is it incomplete?")
        return out

    def row_byte_ranges(self, key: str, layer: int | None, rows: list[tuple[int, int]]) -> list[ByteRange] | None:
        """Where the bytes of rows [r0, r1) (axis 0 of `tensor[layer]`, or of the tensor) lie in the
        checkpoint files, in order; None unless every row lies whole in one contiguous stored chunk.

        This lets export copy bytes file to file: the HF tensors of every mapping row are row
        selections of the megatron tensor, and stored chunks split rows (column-parallel TP, the
        layer axis) far more often than columns (row-parallel TP; those fall back to `read`)."""
        if sys.byteorder != "little":
            return None
        meta = self.tensors[key]
        shape = tuple(meta.size)
        lead = 0 if layer is None else 1  # the layer axis, if any, comes before the row axis
        if len(shape) <= lead:
            return None
        row_numel = math.prod(shape[lead + 1:])
        item = torch.empty((), dtype=meta.properties.dtype).element_size()
        # Chunks holding whole rows of this layer: (first row, row count, data offset of that layer's first row).
        spans = []
        for chunk in meta.chunks:
            c_off, c_size = tuple(chunk.offsets), tuple(chunk.sizes)
            if lead and not c_off[0] <= layer < c_off[0] + c_size[0]:
                continue
            if any(o != 0 for o in c_off[lead + 1:]) or c_size[lead + 1:] != shape[lead + 1:]:
                return None  # split along columns: not row-contiguous
            where = self._locate(key, c_off, c_size)
            if where is None:
                return None
            path, data = where
            layer_start = data + ((layer - c_off[0]) * c_size[1] * row_numel * item if lead else 0)
            spans.append((c_off[lead], c_size[lead], path, layer_start))
        out: list[ByteRange] = []
        for r0, r1 in rows:
            r = r0
            while r < r1:
                hit = next((s for s in spans if s[0] <= r < s[0] + s[1]), None)
                if hit is None:
                    return None
                first, count, path, start = hit
                end = min(r1, first + count)
                seg = ByteRange(path, start + (r - first) * row_numel * item, (end - r) * row_numel * item)
                if out and out[-1].path == seg.path and out[-1].offset + out[-1].nbytes == seg.offset:
                    out[-1] = ByteRange(seg.path, out[-1].offset, out[-1].nbytes + seg.nbytes)
                else:
                    out.append(seg)
                r = end
        return out

    def _locate(self, key: str, offsets: tuple[int, ...], sizes: tuple[int, ...]) -> tuple[Path, int] | None:
        """(file, byte offset of element 0) of a stored chunk whose raw data is C-contiguous, else None.
        Reads only the chunk's pickle and zip directory (torch.load onto the meta device)."""
        cache_key = (key, offsets)
        if cache_key not in self._located:
            info = self._storage.get(MetadataIndex(key, torch.Size(offsets)))
            found = None
            if info is not None and not getattr(info, "transform_descriptors", None):
                path = self.root / info.relative_path
                try:
                    with open(path, "rb") as f:
                        t = torch.load(_FileSlice(f, info.offset, info.length), map_location="meta",
                                       weights_only=True)
                    start = getattr(t.untyped_storage(), "_checkpoint_offset", None)
                    if (isinstance(start, int) and t.is_contiguous() and t.numel() == math.prod(sizes)
                            and t.dtype == self.tensors[key].properties.dtype):
                        found = (path, info.offset + start + t.storage_offset() * t.element_size())
                except Exception:
                    found = None  # `read` reports the problem, with the file name
            self._located[cache_key] = found
        return self._located[cache_key]

    def _load_chunk(self, key: str, offsets: tuple[int, ...], sizes: tuple[int, ...]) -> torch.Tensor:
        info = self._storage.get(MetadataIndex(key, torch.Size(offsets)))
        if info is None:
            raise UserError(f"{self.root}: .metadata lists a chunk of {key} at {list(offsets)} but no storage for it")
        if getattr(info, "transform_descriptors", None):
            raise UserError(f"{self.root}: {key} is stored with transforms {info.transform_descriptors}, "
                            "which export does not support")
        path = self.root / info.relative_path
        try:
            with open(path, "rb") as f:
                tensor = torch.load(_FileSlice(f, info.offset, info.length), map_location="cpu", weights_only=True)
        except Exception as err:
            raise UserError(f"{path}: cannot read tensor {key} at {list(offsets)} (truncated or corrupt?): "
                            f"{err}") from err
        if not isinstance(tensor, torch.Tensor) or tensor.numel() != math.prod(sizes):
            got = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise UserError(f"{path}: chunk of {key} at {list(offsets)} is {got}, .metadata says {list(sizes)}")
        return tensor.reshape(sizes)


def _sharded_backend(it: Path) -> str | None:
    """The backend named in megatron's metadata.json, or None when there is none to read."""
    try:
        return json.loads((it / "metadata.json").read_text()).get("sharded_backend")
    except (OSError, ValueError, AttributeError):
        return None
