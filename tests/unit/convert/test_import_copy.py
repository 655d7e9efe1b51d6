"""Import copies chunk bytes file to file (convert/dcp_copy_writer.py). The reference is
independent of that path: the mapping applied in memory to tensors safetensors loads."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from nemo_terminal.checkpoint.dcp_reader import ByteRange, CheckpointReader
from nemo_terminal.checkpoint.directory import resolve_checkpoint
from nemo_terminal.convert.dcp_copy_writer import ChunkFills, _FillingStream
from nemo_terminal.convert.hf_io import DTYPES, HFCheckpoint
from nemo_terminal.convert.importer import _GroupSource, import_hf
from nemo_terminal.convert.mapping import (
    bitwise_equal,
    expand,
    hf_to_megatron,
    megatron_shape,
)
from nemo_terminal.models.qwen3 import Qwen3Config


def _expected(hf: HFCheckpoint, cfg: Qwen3Config, pair, dtype: torch.dtype) -> torch.Tensor:
    return hf_to_megatron(pair.transform, hf.read(pair.hf), cfg).to(dtype).contiguous()


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])  # tiny models are fp32: bytes copied, then cast
def test_import_equals_the_mapping_in_memory(tiny_hf_dir, tmp_path, dtype):
    import_hf(tiny_hf_dir, tmp_path / "meg", dtype=dtype, show_progress=False)
    reader = CheckpointReader(resolve_checkpoint(tmp_path / "meg"))
    cfg, hf = Qwen3Config.from_hf_dir(tiny_hf_dir), HFCheckpoint.scan(tiny_hf_dir)
    for pair in expand(cfg):
        got = reader.read(pair.megatron, pair.layer)
        assert bitwise_equal(got, _expected(hf, cfg, pair, DTYPES[dtype])), (pair.megatron, pair.layer)


def _bytes(ranges: list[ByteRange]) -> bytes:
    out = b""
    for r in ranges:
        with open(r.path, "rb") as f:
            f.seek(r.offset)
            out += f.read(r.nbytes)
    return out


def test_chunks_are_byte_ranges_exactly_when_no_cast_is_needed(tiny_hf_dir):
    cfg, hf = Qwen3Config.from_hf_dir(tiny_hf_dir), HFCheckpoint.scan(tiny_hf_dir)
    pairs = expand(cfg)
    copy = _GroupSource(hf, cfg, pairs, torch.float32, {})
    cast = _GroupSource(hf, cfg, pairs, torch.bfloat16, {})
    for pair in pairs:
        shape = megatron_shape(pair, [hf.shapes[h] for h in pair.hf])
        want = _expected(hf, cfg, pair, torch.float32)
        whole = copy.byte_ranges(pair, (0,) * len(shape), shape)
        assert whole is not None and _bytes(whole) == want.view(torch.uint8).numpy().tobytes(), pair.megatron
        # Rows [1, 5): a chunk that starts and ends inside runs (q/k/v groups, gate/up halves).
        part = copy.byte_ranges(pair, (1, *[0] * (len(shape) - 1)), (4, *shape[1:]))
        assert _bytes(part) == want[1:5].contiguous().view(torch.uint8).numpy().tobytes(), pair.megatron
        assert cast.byte_ranges(pair, (0,) * len(shape), shape) is None
        if len(shape) == 2:  # a chunk that splits columns (row-parallel TP) is never byte ranges
            assert copy.byte_ranges(pair, (0, 0), (shape[0], shape[1] // 2)) is None


def test_torch_save_archive_filled_from_files_loads_those_bytes(tmp_path):
    src = tmp_path / "src.bin"
    values = torch.arange(10, dtype=torch.float32)
    src.write_bytes(b"junk" + values.numpy().tobytes())
    fills = ChunkFills()
    fills.push([ByteRange(src, 4 + 6 * 4, 4 * 4), ByteRange(src, 4, 6 * 4)])  # values[6:], then values[:6]
    fills.push(torch.tensor([7.0, 8.0]))  # a chunk materialized in memory (a cast)
    starts = []
    with open(tmp_path / "out", "wb") as raw:  # two archives back to back, as DCP appends them
        for placeholder in (torch.empty(10), torch.empty(2)):
            starts.append(raw.tell())
            stream = _FillingStream(raw, fills, tensor_chunk=True)
            torch.save(placeholder, stream)
            stream.close()
    fills.check_done()
    out = (tmp_path / "out").read_bytes()
    loaded = [torch.load(io.BytesIO(b), weights_only=True) for b in (out[starts[0]:starts[1]], out[starts[1]:])]
    assert torch.equal(loaded[0], torch.cat([values[6:], values[:6]]))
    assert torch.equal(loaded[1], torch.tensor([7.0, 8.0]))
    buf = io.BytesIO()  # skip_data is off again once the archive's stream is closed
    torch.save(torch.ones(3), buf)
    assert torch.equal(torch.load(io.BytesIO(buf.getvalue()), weights_only=True), torch.ones(3))


def test_a_fill_of_another_size_or_one_left_unwritten_is_an_error(tmp_path: Path):
    fills = ChunkFills()
    fills.push(torch.ones(4))
    with open(tmp_path / "out", "wb") as raw:
        fills.begin_archive()
        with pytest.raises(RuntimeError, match="skipped 8 bytes where the next chunk has 16"):
            fills.write_next(raw, 8)
        fills.end_archive()
    fills.push(torch.ones(2))
    with pytest.raises(RuntimeError, match="1 resolved chunks were never written"):
        fills.check_done()
