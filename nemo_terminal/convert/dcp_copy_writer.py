"""Import's torch_dist save: each chunk's bytes copied file to file, not through Python memory.

A plain torch.distributed.checkpoint save materializes every tensor and write()s it. Measured on
the development machine (1.2 GB, page cache warm, CPU seconds): read + write through a buffer
2.2-2.9 s, the kernel's copy_file_range 0.6 s. Import is mostly such bytes: every mapping
transform only moves whole rows (`mapping.Transform.selects_rows`), so when no dtype cast is
needed a megatron chunk is a list of byte ranges of the HF safetensors files.

How: torch.save writes each chunk's archive under `torch.serialization.skip_data()`, whose
documented contract is to leave the space of the storage bytes empty "to be populated in a
separate pass"; it does so by one `seek(nbytes, SEEK_CUR)` on the stream. Our stream fills that
space right there: from the HF files (copy_file_range), or from memory for a chunk that had to
be materialized (a dtype cast). The archives, `.metadata` and file layout stay torch's own,
so every torch_dist reader loads the result. Chunks are filled in the order the planner resolved
them; a chunk left unfilled, or a fill of another size, is an error, never a zero-filled tensor.
"""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.filesystem import _StorageWriterTransforms
from torch.distributed.checkpoint.planner import WriteItemType

from nemo_terminal.checkpoint.dcp_reader import ByteRange
from nemo_terminal.runtime.megatron_compat import save_planner_class

# A chunk's bytes: byte ranges of other files, in order, or a tensor in memory.
Fill = list[ByteRange] | torch.Tensor
_WRITE_BLOCK = 64 << 20


def fill_nbytes(fill: Fill) -> int:
    if isinstance(fill, torch.Tensor):
        return fill.numel() * fill.element_size()
    return sum(r.nbytes for r in fill)


def copy_ranges(ranges: Sequence[ByteRange], out_fd: int, out_offset: int) -> None:
    """Copy `ranges` back to back into `out_fd` from `out_offset`, inside the kernel where it can."""
    for r in ranges:
        with open(r.path, "rb") as src:
            offset, done = r.offset, 0
            while done < r.nbytes:
                want = r.nbytes - done
                try:
                    n = os.copy_file_range(src.fileno(), out_fd, want, offset + done, out_offset + done)
                except (AttributeError, OSError):  # not Linux, or across filesystems the kernel refuses
                    n = os.pwrite(out_fd, os.pread(src.fileno(), min(want, _WRITE_BLOCK), offset + done),
                                  out_offset + done)
                if n <= 0:
                    raise OSError(f"{r.path}: file ended {want} bytes early, at byte {offset + done} (truncated?)")
                done += n
        out_offset += r.nbytes


class ChunkFills:
    """The fills of chunks resolved but not yet written (first in, first out), and the
    `skip_data` state, which is on only while torch.save writes one tensor chunk's archive."""

    def __init__(self) -> None:
        self._queue: deque[Fill] = deque()
        self._skip: torch.serialization.skip_data | None = None

    def push(self, fill: Fill) -> None:
        if fill_nbytes(fill):  # torch.save skips no space for an empty storage
            self._queue.append(fill)

    def begin_archive(self) -> None:
        self.end_archive()
        self._skip = torch.serialization.skip_data()
        self._skip.__enter__()

    def end_archive(self) -> None:
        if self._skip is not None:
            self._skip.__exit__(None, None, None)
            self._skip = None

    def write_next(self, raw: io.BufferedIOBase, nbytes: int) -> None:
        """Write the oldest fill at `raw`'s position, which must be a hole of exactly `nbytes`."""
        if self._skip is None:
            raise RuntimeError(f"a seek of {nbytes} bytes outside a tensor chunk's archive")
        if not self._queue:
            raise RuntimeError(f"torch.save skipped {nbytes} bytes that no resolved chunk accounts for")
        fill = self._queue.popleft()
        if fill_nbytes(fill) != nbytes:
            raise RuntimeError(f"torch.save skipped {nbytes} bytes where the next chunk has {fill_nbytes(fill)}")
        raw.flush()
        start = raw.tell()
        if isinstance(fill, torch.Tensor):
            data = fill.contiguous().reshape(-1).view(torch.uint8).numpy().data
            for i in range(0, nbytes, _WRITE_BLOCK):
                os.pwrite(raw.fileno(), data[i:i + _WRITE_BLOCK], start + i)
        else:
            copy_ranges(fill, raw.fileno(), start)
        raw.seek(start + nbytes)

    def check_done(self) -> None:
        if self._queue:
            raise RuntimeError(f"{len(self._queue)} resolved chunks were never written: torch.save did not "
                               "skip their storage bytes (has torch.serialization.skip_data changed?)")


class _FillingStream(io.RawIOBase):
    """What torch.save writes one archive into: the file, with the skipped storage bytes filled.
    Closing it leaves the file open (DCP appends the next archive), as DCP's own wrapper does."""

    def __init__(self, raw: io.BufferedIOBase, fills: ChunkFills, tensor_chunk: bool):
        super().__init__()
        self._raw, self._fills = raw, fills
        if tensor_chunk:
            fills.begin_archive()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        return self._raw.write(b)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_CUR:
            raise io.UnsupportedOperation("only torch.save's skip of storage bytes (SEEK_CUR) is supported")
        self._fills.write_next(self._raw, offset)
        return self._raw.tell()

    def tell(self) -> int:
        return self._raw.tell()

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        if not self.closed:
            self._fills.end_archive()
            self._raw.flush()
        super().close()


def copy_writer(path: Path, fills: ChunkFills):
    """DCP's FileSystemWriter (one file per chunk, one thread, no fsync) whose archives go through
    a `_FillingStream`. The stream wrapper is DCP's per-archive transform hook, left without
    extensions, so `.metadata` records no transform and any torch_dist reader loads the files."""
    class _FillTransforms(_StorageWriterTransforms):
        def transform_save_stream(self, write_item, raw_stream):
            return _FillingStream(raw_stream, fills, write_item.type != WriteItemType.BYTE_IO), []

    # per_thread_copy_ahead=0: chunks are resolved and written strictly in turn, even with CUDA.
    writer = FileSystemWriter(str(path), single_file_per_rank=False, thread_count=1, sync_files=False,
                              per_thread_copy_ahead=0)
    writer.transforms = _FillTransforms(())
    return writer


def copy_planner(produce: Callable[[str, tuple[int, ...], tuple[int, ...]], Fill], fills: ChunkFills):
    """megatron's save planner, producing each chunk at the moment it is written: a tensor from
    `produce` is written from memory, byte ranges are copied; torch.save sees an unfilled tensor."""
    class CopyPlanner(save_planner_class()):
        def resolve_data(self, write_item):
            if write_item.type == WriteItemType.BYTE_IO:
                return super().resolve_data(write_item)
            chunk = write_item.tensor_data.chunk
            fill = produce(write_item.index.fqn, tuple(chunk.offsets), tuple(chunk.sizes))
            fills.push(fill)
            if isinstance(fill, torch.Tensor):
                return fill
            # Never read: torch.save skips its bytes. torch.empty leaves the pages unallocated.
            return torch.empty(tuple(chunk.sizes), dtype=write_item.tensor_data.properties.dtype)

    return CopyPlanner(flatten_state_dict=False)


@contextmanager
def copy_save(fills: ChunkFills) -> Iterator[None]:
    """Around the DCP save: no per-record CRC32 (there is no data to sum for a skipped storage;
    torch.load does not check it, and every checkpoint file gets a content hash,
    checkpoint/integrity.py, that every later load checks); `skip_data` off again however
    torch.save ends; every resolved chunk written."""
    old = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        yield
    finally:
        fills.end_archive()
        torch.serialization.set_crc32_options(old)
    fills.check_done()
