"""megatron-core checkpoint (any TP/PP it was saved at) -> HF safetensors directory.

The checkpoint's .metadata is read once (`dcp_read.CheckpointReader`); then
each tensor group is loaded on its own as the full TP=1 tensor of one layer
(the reader assembles TP/PP chunks, and fc1's [gate_i; up_i] pieces, since the
checkpoint's global tensors are the TP=1 layout), transformed back to HF
tensors and appended to a streaming safetensors writer. Peak memory is about
one group. No network and no original HF directory:
config, generation config and tokenizer come from the checkpoint directory.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from nemo_terminal.checkpoint import directory as cio
from nemo_terminal.checkpoint.dcp_reader import CheckpointReader
from nemo_terminal.convert.hf_io import (StreamingSafetensorsWriter, hf_dtype_name, parse_dtype, plan_shards,
                                         write_index)
from nemo_terminal.convert.importer import prepare_output
from nemo_terminal.convert.mapping import Pair, expand, megatron_shape, megatron_to_hf
from nemo_terminal.errors import UserError
from nemo_terminal.models.qwen3 import Qwen3Config

log = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # the Hub's usual "5GB" shards


def _check_checkpoint(it: Path, pairs: list[Pair], reader: CheckpointReader, shapes: dict) -> None:
    """Every pair's key must be in the checkpoint with the config's shape; extra keys are
    optimizer/trainer state and are ignored."""
    missing = sorted({p.megatron for p in pairs} - set(reader.tensors))
    if missing:
        raise UserError(f"{it} lacks model tensors {missing}: is model_config.json from this checkpoint?")
    for p in pairs:
        want = shapes[(p.megatron, p.layer)]
        glob = reader.shape(p.megatron)
        got = glob[1:] if p.layer is not None else glob
        if tuple(got) != tuple(want) or (p.layer is not None and not 0 <= p.layer < glob[0]):
            implied = list(want) if p.layer is None else f"{list(want)} per layer, for {p.layer + 1}+ layers"
            raise UserError(f"{it}: tensor {p.megatron} has shape {list(glob)}, model_config.json implies {implied}")


def _row_runs(pair: Pair, shape: tuple[int, ...], cfg: Qwen3Config) -> list[list[tuple[int, int]]]:
    """For each HF tensor of a pair, the runs [r0, r1) of megatron rows (axis 0 of one layer's tensor)
    that it is made of, in order. Every transform only selects and reorders rows, so running the
    mapping's own megatron_to_hf on the row indices gives them."""
    rows = torch.arange(shape[0]).reshape(shape[0], *([1] * (len(shape) - 1)))
    runs = []
    for t in megatron_to_hf(pair.transform, rows, cfg):
        idx = t.reshape(-1).tolist()
        out: list[tuple[int, int]] = []
        for r in idx:
            if out and out[-1][1] == r:
                out[-1] = (out[-1][0], r + 1)
            else:
                out.append((r, r + 1))
        runs.append(out)
    return runs


def _byte_segments(reader: CheckpointReader, pair: Pair, shape: tuple[int, ...], cfg: Qwen3Config,
                   target: torch.dtype) -> list | None:
    """Per HF tensor, the file byte ranges that hold it verbatim; None when it must be loaded and
    transformed (a dtype cast, or chunks split along columns, as row-parallel TP saves them)."""
    if reader.dtype(pair.megatron) != target:
        return None
    segments = []
    for runs in _row_runs(pair, shape, cfg):
        segs = reader.row_segments(pair.megatron, pair.layer, runs)
        if segs is None:
            return None
        segments.append(segs)
    return segments


def export_hf(meg_dir: str | Path, out: str | Path, dtype: str | None = None, force: bool = False,
              max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, show_progress: bool = True) -> Path:
    """Write an HF Qwen3 directory from the checkpoint `latest` points to; return `out`."""
    from tqdm import tqdm

    from nemo_terminal.models.tiny import generation_config

    meg_dir, out = Path(meg_dir), Path(out)
    cfg = cio.read_model_config(meg_dir)
    it = cio.resolve_checkpoint(meg_dir)
    tok_dir = cio.tokenizer_dir(meg_dir)
    target = parse_dtype(dtype, cfg.torch_dtype)
    if out.resolve() == meg_dir.resolve():
        raise UserError(f"--out {out} is the checkpoint directory itself; choose another directory")
    prepare_output(out, force)
    reader = CheckpointReader(it)  # reads .metadata once; no process group needed
    pairs = expand(cfg)
    hf_shapes = cfg.hf_weight_shapes()
    meg_shapes = {(p.megatron, p.layer): megatron_shape(p, [hf_shapes[h] for h in p.hf]) for p in pairs}
    _check_checkpoint(it, pairs, reader, meg_shapes)

    shards = plan_shards([[(h, hf_shapes[h]) for h in p.hf] for p in pairs], target, max_shard_bytes)
    progress = tqdm(total=len(pairs), desc="export", unit="group", disable=not show_progress)
    queue = list(pairs)
    for shard in shards:
        writer = StreamingSafetensorsWriter(out / shard.file, shard.entries, target)
        try:
            names = [n for n, _ in shard.entries]
            while queue and queue[0].hf[0] in names:
                pair = queue.pop(0)
                segments = _byte_segments(reader, pair, meg_shapes[(pair.megatron, pair.layer)], cfg, target)
                if segments is not None:  # the HF tensors are byte ranges of stored chunks: copy file to file
                    for name, segs in zip(pair.hf, segments):
                        writer.copy_from_files(name, segs)
                else:
                    full = reader.read(pair.megatron, pair.layer)
                    for name, tensor in zip(pair.hf, megatron_to_hf(pair.transform, full, cfg)):
                        writer.write(name, tensor.to(target))
                    del full
                progress.update(1)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    progress.close()
    assert not queue
    write_index(out, shards, target)
    _write_configs(out, meg_dir, cfg, target, generation_config())
    cio.copy_tokenizer(tok_dir, out)
    log.info("exported %s -> %s (%d shards, %s)", it, out, len(shards), hf_dtype_name(target))
    return out


def _write_configs(out: Path, meg_dir: Path, cfg: Qwen3Config, dtype: torch.dtype, default_gen: dict) -> None:
    hf_cfg = cfg.to_hf_dict()
    hf_cfg["torch_dtype"] = hf_dtype_name(dtype)
    (out / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    gen = meg_dir / "generation_config.json"
    if gen.is_file():
        shutil.copyfile(gen, out / "generation_config.json")
    else:
        (out / "generation_config.json").write_text(json.dumps(default_gen, indent=2) + "\n")
