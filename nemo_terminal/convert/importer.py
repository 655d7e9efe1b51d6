"""HF Qwen3 -> megatron-core torch_dist checkpoint, streamed one tensor group at a time.

How memory stays bounded: the checkpoint's structure (keys, global shapes,
chunk offsets) comes from a GPTModel built on the *meta* device, so no weight
is allocated up front. torch.distributed.checkpoint then writes one file per
chunk (`single_file_per_rank=False`, one thread) and asks our planner for each
chunk's data only when it writes it. Stored in the target dtype (the usual case),
a chunk's bytes are byte ranges of the HF files, since every transform only moves
whole rows: they are copied file to file by the kernel (dcp_copy_writer.py), so
import costs about a copy. Otherwise the planner reads that group's HF tensors
(q/k/v, gate/up, or one tensor), transforms and casts them, and keeps only the
last group: peak ≈ one group in and out (a few hundred MB for 8B layers; the
embedding, 1.2 GB in bf16, is the largest).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from megatron.core.dist_checkpointing import ShardedTensor
from megatron.core.dist_checkpointing.core import CheckpointingConfig, save_config
from megatron.core.dist_checkpointing.dict_utils import nested_values
from megatron.core.dist_checkpointing.serialization import get_default_save_common_strategy
from torch.distributed.checkpoint import save as dcp_save
from tqdm import tqdm

from nemo_terminal.checkpoint import directory as cio
from nemo_terminal.checkpoint import megatron_lm
from nemo_terminal.checkpoint.dcp_reader import ByteRange
from nemo_terminal.checkpoint.integrity import record_hashes
from nemo_terminal.checkpoint.save_load import meta_sharded_state_dict
from nemo_terminal.checkpoint.te_extra_state import missing_extra_state
from nemo_terminal.convert.dcp_copy_writer import ChunkFills, copy_planner, copy_save, copy_writer
from nemo_terminal.convert.hf_io import HFCheckpoint, hf_dtype_name, parse_dtype
from nemo_terminal.convert.mapping import (
    Pair,
    check_coverage,
    check_tied_copies,
    expand,
    hf_to_megatron,
    megatron_shape,
    tied_copies,
)
from nemo_terminal.models.qwen3 import Qwen3Config
from nemo_terminal.output_dir import CHECKPOINT, check_output, require_dir, staged_output
from nemo_terminal.runtime.distributed import init_parallel_state
from nemo_terminal.runtime.megatron_compat import to_dcp_state_dict
from nemo_terminal.runtime.parallel import ParallelConfig

log = logging.getLogger(__name__)


class _GroupSource:
    """Full (TP=1) megatron tensors from HF weights, keeping only the most recent group."""

    def __init__(self, hf: HFCheckpoint, cfg: Qwen3Config, pairs: list[Pair], dtype: torch.dtype,
                 prepend: dict[str, int], progress=None):
        self.hf, self.cfg, self.dtype, self.prepend, self.progress = hf, cfg, dtype, prepend, progress
        self.by_key = {(p.megatron, p.layer): p for p in pairs}
        self._last: tuple[tuple[str, int | None], torch.Tensor] | None = None
        self._runs: dict = {}  # (transform, HF shapes) -> _hf_row_runs

    def full(self, key: str, layer: int | None) -> torch.Tensor:
        if self._last is not None and self._last[0] == (key, layer):
            return self._last[1]
        self._last = None  # drop the previous group before reading the next
        pair = self.by_key[(key, layer)]
        tensors = self.hf.read(pair.hf)
        full = hf_to_megatron(pair.transform, tensors, self.cfg).to(self.dtype).contiguous()
        del tensors
        self._last = ((key, layer), full)
        if self.progress is not None:
            self.progress.update(1)
        return full

    def chunk(self, fqn: str, offsets: tuple[int, ...], sizes: tuple[int, ...]) -> torch.Tensor | list[ByteRange]:
        """One checkpoint chunk: where its bytes lie in the HF files, or (a cast needed) the tensor."""
        n = self.prepend.get(fqn, 0)
        layer = offsets[0] if n else None
        assert not n or sizes[0] == 1, (fqn, sizes)
        ranges = self.byte_ranges(self.by_key[(fqn, layer)], offsets[n:], sizes[n:])
        if ranges is not None:
            if self.progress is not None:
                self.progress.update(1)
            return ranges
        full = self.full(fqn, layer)
        index = tuple(slice(o, o + s) for o, s in zip(offsets[n:], sizes[n:], strict=True))
        part = full[index]
        return part.reshape(sizes) if part.is_contiguous() else part.contiguous().reshape(sizes)

    def byte_ranges(self, pair: Pair, offsets: tuple[int, ...], sizes: tuple[int, ...]) -> list[ByteRange] | None:
        """The HF file bytes of megatron rows [offsets[0], +sizes[0]) of one pair's tensor, when the
        chunk holds whole rows and the HF tensors are stored in the target dtype; else None."""
        shapes = [self.hf.shapes[h] for h in pair.hf]
        if not pair.transform.selects_rows or any(offsets[1:]) or (
                tuple(sizes[1:]) != tuple(megatron_shape(pair, shapes)[1:])):
            return None
        key = (pair.transform, tuple(shapes))
        if key not in self._runs:
            self._runs[key] = _hf_row_runs(pair, shapes, self.cfg)
        if self._runs[key] is None:
            return None
        out: list[ByteRange] = []
        lo, hi, pos = offsets[0], offsets[0] + sizes[0], 0
        for i, r0, r1 in self._runs[key]:
            a, b = max(lo, pos), min(hi, pos + r1 - r0)
            if a < b:
                rng = self.hf.row_bytes(pair.hf[i], (r0 + a - pos, r0 + b - pos), self.dtype)
                if rng is None:
                    return None
                if out and out[-1].path == rng.path and out[-1].offset + out[-1].nbytes == rng.offset:
                    prev = out.pop()
                    rng = ByteRange(rng.path, prev.offset, prev.nbytes + rng.nbytes)
                out.append(rng)
            pos += r1 - r0
        return out


def _hf_row_runs(pair: Pair, shapes: list[tuple[int, ...]], cfg: Qwen3Config) -> list[tuple[int, int, int]] | None:
    """The rows of a pair's megatron tensor as runs (HF tensor index, first row, end row), in
    order. Every transform that only moves whole rows, applied to the HF tensors' global row
    numbers, gives them (export's _row_runs runs the other direction). None when it does not."""
    if any(not s for s in shapes):
        return None
    bases = torch.tensor([0, *[s[0] for s in shapes]]).cumsum(0)
    numbers = [torch.arange(b, b + s[0]).reshape(s[0], *([1] * (len(s) - 1)))
               for b, s in zip(bases.tolist(), shapes, strict=False)]
    rows = hf_to_megatron(pair.transform, numbers, cfg)
    if rows.numel() != rows.shape[0] or rows.shape[0] != megatron_shape(pair, shapes)[0]:
        return None
    rows = rows.reshape(-1)
    tensor = torch.searchsorted(bases, rows, right=True) - 1
    local = rows - bases[tensor]
    # A run ends where the next row is in another HF tensor or is not the next row of this one.
    breaks = (tensor[1:] != tensor[:-1]) | (local[1:] != local[:-1] + 1)
    starts = [0, *(torch.nonzero(breaks).reshape(-1) + 1).tolist(), len(rows)]
    return [(int(tensor[a]), int(local[a]), int(local[a]) + b - a)
            for a, b in zip(starts[:-1], starts[1:], strict=True)]


def check_hf_dir(hf_dir: Path, cfg: Qwen3Config, hf: HFCheckpoint,
                 meg_keys: list[tuple[str, int | None]]) -> list[Pair]:
    """Coverage and shape checks before anything is written."""

    pairs = expand(cfg)
    check_coverage(pairs, list(hf.files), meg_keys, hf_source=str(hf_dir), megatron_source="the Qwen3 GPTModel",
                   optional_hf=[p.hf[0] for p in tied_copies(cfg)])
    hf.check_shapes(cfg.hf_weight_shapes())
    check_tied_copies(cfg, hf.files, hf.read, str(hf_dir))  # a tied model's stored lm_head: equal, not mapped
    return pairs


def import_hf(hf_dir: str | Path, out: str | Path, dtype: str | None = None, force: bool = False,
              show_progress: bool = True) -> Path:
    """Convert an HF Qwen3 directory into a Megatron checkpoint directory; return its iter dir.

    Single process: initializes a world of one and TP=1/PP=1 parallel state if none exists.
    """
    hf_dir, out = Path(hf_dir), Path(out)
    require_dir(hf_dir, "--hf-dir")
    check_output(out, CHECKPOINT, inputs=[hf_dir], force=force)  # every refusal before any work
    cfg = Qwen3Config.from_hf_dir(hf_dir)
    target = parse_dtype(dtype, cfg.torch_dtype)
    hf = HFCheckpoint.scan(hf_dir)
    # HF-side coverage and shapes first: cheap, and before any process group exists.
    pairs = expand(cfg)
    check_hf_dir(hf_dir, cfg, hf, [(p.megatron, p.layer) for p in pairs])
    init_parallel_state(ParallelConfig())
    sharded = meta_sharded_state_dict(cfg, target)
    # TE-spec loaders (Megatron-LM, Bridge, NGC) ask for TE modules' _extra_state: write them too.
    sharded["model"].update(missing_extra_state(cfg, list(nested_values(sharded))))
    tensors = [sh for sh in nested_values(sharded) if isinstance(sh, ShardedTensor)]
    prepend = {sh.key: sh.prepend_axis_num for sh in tensors}
    meg_keys = list(dict.fromkeys((sh.key, sh.global_offset[0] if sh.prepend_axis_num else None) for sh in tensors))
    pairs = check_hf_dir(hf_dir, cfg, hf, meg_keys)

    # Written beside `out` and renamed into place: a failure leaves no half checkpoint and an old `out` intact.
    with staged_output(out, CHECKPOINT, inputs=[hf_dir], force=force) as tmp:
        it = tmp / cio.RELEASE  # Megatron-LM's and Bridge's name for weights to fine-tune from
        it.mkdir()
        cfg.torch_dtype = hf_dtype_name(target)
        progress = tqdm(total=len(pairs), desc="import", unit="group", disable=not show_progress)
        source = _GroupSource(hf, cfg, pairs, target, prepend, progress)
        pyt_state_dict = to_dcp_state_dict(sharded)
        fills = ChunkFills()  # chunk bytes are copied file to file where they can (convert/dcp_copy_writer.py)
        with copy_save(fills):
            dcp_save(pyt_state_dict, storage_writer=copy_writer(it, fills), planner=copy_planner(source.chunk, fills))
        progress.close()
        get_default_save_common_strategy().save_common(megatron_lm.common_state(cfg, iteration=0), it)
        megatron_lm.write_run_config(it, cfg)
        save_config(CheckpointingConfig("torch_dist", 1), str(it))
        record_hashes(it)  # content hashes, checked by every later load (checkpoint/integrity.py)

        cio.write_model_config(tmp, cfg)
        cio.copy_tokenizer(hf_dir, tmp / cio.TOKENIZER_DIR)
        if (hf_dir / "generation_config.json").is_file():
            shutil.copyfile(hf_dir / "generation_config.json", tmp / "generation_config.json")
        cio.write_latest(tmp, it.name)
    it = out / it.name
    log.info("imported %s -> %s (%s, %d tensor groups)", hf_dir, it, cfg.torch_dtype, len(pairs))
    return it

