"""Streaming access to Hugging Face safetensors checkpoints, in both directions.

Reading opens a shard with `safe_open` only for the tensors of one group and
closes it again, so the mapped pages of a shard are released between groups.
Writing lays out the safetensors header from known shapes first and then
appends tensor bytes one group at a time, so no shard is ever whole in memory.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from nemo_terminal.checkpoint.dcp_reader import ByteRange
from nemo_terminal.errors import UserError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_HF_DTYPE_NAMES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_ST_CODES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


def parse_dtype(name: str | None, default: str) -> torch.dtype:
    """--dtype (bf16|fp16|fp32) or a config.json torch_dtype name -> torch dtype."""
    name = name or default
    if name in DTYPES:
        return DTYPES[name]
    if name in _HF_DTYPE_NAMES:
        return _HF_DTYPE_NAMES[name]
    raise UserError(f"--dtype must be one of {sorted(DTYPES)}, got {name!r}")


def hf_dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in _HF_DTYPE_NAMES.items()}[dtype]


@dataclass
class HFCheckpoint:
    """The tensor index of an HF directory: which file holds which tensor, with its shape."""

    root: Path
    files: dict[str, str] = field(default_factory=dict)  # tensor name -> file name
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # tensor name -> (safetensors dtype code, first data byte in its file, byte count)
    layout: dict[str, tuple[str, int, int]] = field(default_factory=dict)

    @classmethod
    def scan(cls, root: str | Path) -> HFCheckpoint:
        """Read every shard's header (not its data); errors name the file."""
        ckpt = cls(Path(root))
        index = ckpt.root / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as err:
                raise UserError(f"{index} is not a safetensors index (needs a 'weight_map'): {err}") from None
            names = sorted(set(weight_map.values()))
        elif (ckpt.root / SINGLE_FILE).is_file():
            weight_map, names = None, [SINGLE_FILE]
        else:
            raise UserError(f"{ckpt.root} has neither {INDEX_FILE} nor {SINGLE_FILE}")
        for name in names:
            path = ckpt.root / name
            if not path.is_file():
                raise UserError(f"{index} lists {name}, which is missing from {ckpt.root}")
            try:
                with safe_open(str(path), framework="pt") as f:
                    for key in f.keys():
                        ckpt.files[key] = name
                        ckpt.shapes[key] = tuple(f.get_slice(key).get_shape())
            except Exception as err:  # safetensors raises its own error types for bad headers
                raise UserError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from err
            ckpt.layout.update(_data_layout(path))  # the header safe_open has just validated
        if weight_map is not None:
            for key, name in weight_map.items():
                if ckpt.files.get(key) != name:
                    raise UserError(f"{index} says tensor {key} is in {name}, but that file does not hold it")
        return ckpt

    def check_shapes(self, expected: dict[str, tuple[int, ...]]) -> None:
        for key, shape in expected.items():
            if key in self.shapes and self.shapes[key] != tuple(shape):
                raise UserError(
                    f"{self.root / self.files[key]}: tensor {key} has shape {list(self.shapes[key])}, "
                    f"but config.json implies {list(shape)}"
                )

    def row_bytes(self, name: str, rows: tuple[int, int], dtype: torch.dtype) -> ByteRange | None:
        """Where rows [r0, r1) (axis 0) of tensor `name` lie in its file, when it is stored as
        `dtype` (safetensors data is little-endian and row-major); None when a cast is needed."""
        code, start, nbytes = self.layout[name]
        if code != _ST_CODES.get(dtype) or sys.byteorder != "little":
            return None
        n_rows = self.shapes[name][0] if self.shapes[name] else 1
        row = nbytes // n_rows if n_rows else 0
        r0, r1 = rows
        assert 0 <= r0 <= r1 <= n_rows and row * n_rows == nbytes, (name, rows, n_rows, nbytes)
        return ByteRange(self.root / self.files[name], start + r0 * row, (r1 - r0) * row)

    def read(self, names: Sequence[str]) -> list[torch.Tensor]:
        """The named tensors; each shard involved is opened and closed within this call."""
        out: dict[str, torch.Tensor] = {}
        for file in dict.fromkeys(self.files[n] for n in names):
            path = self.root / file
            try:
                with safe_open(str(path), framework="pt") as f:
                    for n in names:
                        if self.files[n] == file:
                            out[n] = f.get_tensor(n)
            except UserError:
                raise
            except Exception as err:
                raise UserError(f"{path}: cannot read tensors {list(names)} (truncated or corrupt?): {err}") from err
        return [out[n] for n in names]


def _data_layout(path: Path) -> dict[str, tuple[str, int, int]]:
    """{tensor: (dtype code, absolute data offset, byte count)} from a safetensors header."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    start = 8 + size
    return {k: (v["dtype"], start + v["data_offsets"][0], v["data_offsets"][1] - v["data_offsets"][0])
            for k, v in header.items() if k != "__metadata__"}


# -- writing ---------------------------------------------------------------------------------------


@dataclass
class Shard:
    file: str
    entries: list[tuple[str, tuple[int, ...]]]  # (tensor name, shape) in write order


def assign_shards(groups: Sequence[Sequence[tuple[str, tuple[int, ...]]]], dtype: torch.dtype,
                max_shard_bytes: int) -> list[Shard]:
    """Assign whole groups to shards of at most `max_shard_bytes` (a bigger group gets its own)."""
    item = torch.empty((), dtype=dtype).element_size()
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for group in groups:
        nbytes = sum(item * _numel(shape) for _, shape in group)
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].extend(group)
        size += nbytes
    n = len(shards)
    return [Shard(f"model-{i + 1:05d}-of-{n:05d}.safetensors", entries) for i, entries in enumerate(shards)]


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


class StreamingSafetensorsWriter:
    """Writes one safetensors file whose tensors arrive one by one, in header order."""

    def __init__(self, path: Path, entries: Sequence[tuple[str, tuple[int, ...]]], dtype: torch.dtype):
        item = torch.empty((), dtype=dtype).element_size()
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape in entries:
            nbytes = item * _numel(shape)
            header[name] = {"dtype": _ST_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
        self._expected = list(entries)
        self._dtype = dtype
        self._next = 0
        self.path = path
        self._f = open(path, "wb")
        self._f.write(struct.pack("<Q", len(blob)))
        self._f.write(blob)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        want_name, want_shape = self._expected[self._next]
        assert name == want_name and tuple(tensor.shape) == tuple(want_shape) and tensor.dtype == self._dtype, (
            name, want_name, tuple(tensor.shape), want_shape, tensor.dtype)
        self._f.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
        self._next += 1

    def copy_from_files(self, name: str, segments: Sequence[tuple[Path, int, int]]) -> None:
        """Write the next tensor as the concatenation of (file, byte offset, byte count) segments
        of other files, copied by the kernel (sendfile) without passing through this process."""
        want_name, want_shape = self._expected[self._next]
        nbytes = torch.empty((), dtype=self._dtype).element_size() * _numel(want_shape)
        assert name == want_name and sum(n for _, _, n in segments) == nbytes, (name, want_name, nbytes)
        self._f.flush()
        out_fd = self._f.fileno()
        for path, offset, count in segments:
            with open(path, "rb") as src:
                in_fd = src.fileno()
                while count:
                    try:
                        sent = os.sendfile(out_fd, in_fd, offset, count)
                    except OSError:
                        sent = os.write(out_fd, os.pread(in_fd, min(count, 1 << 26), offset))
                    if sent <= 0:
                        raise UserError(f"{path}: file ended {count} bytes early, at byte {offset} (truncated?)")
                    offset += sent
                    count -= sent
        self._next += 1

    def close(self) -> None:
        assert self._next == len(self._expected), f"{self.path}: wrote {self._next} of {len(self._expected)} tensors"
        self._f.close()

    def abort(self) -> None:
        self._f.close()


def write_index(out_dir: Path, shards: Sequence[Shard], dtype: torch.dtype) -> None:
    item = torch.empty((), dtype=dtype).element_size()
    total = sum(item * _numel(shape) for s in shards for _, shape in s.entries)
    weight_map = {name: s.file for s in shards for name, _ in s.entries}
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
