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
from tqdm import tqdm

from nemo_terminal.checkpoint import directory as cio
from nemo_terminal.checkpoint.dcp_reader import CheckpointReader
from nemo_terminal.checkpoint.preload import check_before_load
from nemo_terminal.checkpoint.source import open_checkpoint
from nemo_terminal.convert.hf_io import (
    StreamingSafetensorsWriter,
    assign_shards,
    hf_dtype_name,
    parse_dtype,
    write_index,
)
from nemo_terminal.convert.mapping import Pair, expand, megatron_modules, megatron_shape, megatron_to_hf
from nemo_terminal.errors import UserError
from nemo_terminal.models.chat_template import chat_template, write_chat_template
from nemo_terminal.models.qwen3 import Qwen3Config
from nemo_terminal.models.tiny import generation_config
from nemo_terminal.output_dir import HF_EXPORT, check_output, require_dir, staged_output, write_export_marker

log = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # the Hub's usual "5GB" shards


def _check_checkpoint(it: Path, pairs: list[Pair], reader: CheckpointReader, shapes: dict, num_layers: int) -> None:
    """Coverage both ways, so nothing is dropped silently: every pair's key must be in the checkpoint
    with the config's shape and layer count, and every model tensor of the checkpoint (a key under
    `embedding.`, `decoder.`, ...) must be some pair's. Other keys are optimizer/trainer state."""
    known = {p.megatron for p in pairs}
    missing = sorted(known - set(reader.tensors))
    if missing:
        raise UserError(f"{it} lacks model tensors {missing}: is model_config.json from this checkpoint?")
    modules = megatron_modules()
    unmapped = sorted(k for k in reader.tensors
                      if k.split(".")[0] in modules and k not in known and not k.endswith("_extra_state"))
    if unmapped:
        raise UserError(f"{it} has model tensors no mapping row covers {unmapped[:8]}"
                        f"{f' and {len(unmapped) - 8} more' if len(unmapped) > 8 else ''}: export would drop them; "
                        "is model_config.json from this checkpoint (tie_word_embeddings, architecture)?")
    for p in pairs:
        want = shapes[(p.megatron, p.layer)]
        glob = reader.shape(p.megatron)
        got = glob[1:] if p.layer is not None else glob
        if tuple(got) != tuple(want) or (p.layer is not None and glob[0] != num_layers):
            implied = list(want) if p.layer is None else f"{list(want)} per layer, for {num_layers} layers"
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


def _byte_ranges(reader: CheckpointReader, pair: Pair, shape: tuple[int, ...], cfg: Qwen3Config,
                   target: torch.dtype) -> list | None:
    """Per HF tensor, the file byte ranges that hold it verbatim; None when it must be loaded and
    transformed (a dtype cast, or chunks split along columns, as row-parallel TP saves them)."""
    if reader.dtype(pair.megatron) != target or not pair.transform.selects_rows:
        return None
    segments = []
    for runs in _row_runs(pair, shape, cfg):
        segs = reader.row_byte_ranges(pair.megatron, pair.layer, runs)
        if segs is None:
            return None
        segments.append(segs)
    return segments


def export_hf(meg_dir: str | Path, out: str | Path, dtype: str | None = None, force: bool = False,
              max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, show_progress: bool = True,
              thinking: str | None = None, verify_hashes: bool = True, tokenizer: str | Path | None = None) -> Path:
    """Write an HF Qwen3 directory from the checkpoint `latest` points to; return `out`.
    `thinking` sets the chat template's policy (default: the one the run was trained with)."""
    meg_dir, out = Path(meg_dir), Path(out)
    require_dir(meg_dir, "--megatron-dir")
    check_output(out, HF_EXPORT, inputs=[meg_dir, tokenizer], force=force)  # every refusal before any work
    source = open_checkpoint(meg_dir, tokenizer)  # ours, Megatron-LM's or Bridge's layout
    cfg, it = source.cfg, source.iter_dir
    check_before_load(it, verify_hashes)  # restricted unpickler, sizes, content hashes
    tok_dir = source.require_tokenizer()
    template = served_chat_template(meg_dir, thinking)
    target = parse_dtype(dtype, cfg.torch_dtype)
    reader = CheckpointReader(it)  # reads .metadata once; no process group needed
    pairs = expand(cfg)
    hf_shapes = cfg.hf_weight_shapes()
    meg_shapes = {(p.megatron, p.layer): megatron_shape(p, [hf_shapes[h] for h in p.hf]) for p in pairs}
    _check_checkpoint(it, pairs, reader, meg_shapes, cfg.num_hidden_layers)

    shards = assign_shards([[(h, hf_shapes[h]) for h in p.hf] for p in pairs], target, max_shard_bytes)
    # Written beside `out` and renamed into place: a failure leaves no partial safetensors and an old `out` intact.
    with staged_output(out, HF_EXPORT, inputs=[meg_dir, tokenizer], force=force) as tmp:
        _write_shards(tmp, shards, pairs, reader, meg_shapes, cfg, target, show_progress)
        write_index(tmp, shards, target)
        _write_configs(tmp, meg_dir, cfg, target, generation_config())
        cio.copy_tokenizer(tok_dir, tmp)
        if template is not None:
            write_chat_template(tmp, template)
        write_export_marker(tmp, "nemo-terminal export", str(it.resolve()))
    log.info("exported %s -> %s (%d shards, %s)", it, out, len(shards), hf_dtype_name(target))
    return out


def _write_shards(out: Path, shards: list, pairs: list[Pair], reader: CheckpointReader, meg_shapes: dict,
                  cfg: Qwen3Config, target: torch.dtype, show_progress: bool) -> None:
    """Stream every tensor group into its planned safetensors shard, in order."""
    progress = tqdm(total=len(pairs), desc="export", unit="group", disable=not show_progress)
    queue = list(pairs)
    for shard in shards:
        writer = StreamingSafetensorsWriter(out / shard.file, shard.entries, target)
        try:
            names = [n for n, _ in shard.entries]
            while queue and queue[0].hf[0] in names:
                pair = queue.pop(0)
                segments = _byte_ranges(reader, pair, meg_shapes[(pair.megatron, pair.layer)], cfg, target)
                if segments is not None:  # the HF tensors are byte ranges of stored chunks: copy file to file
                    for name, segs in zip(pair.hf, segments, strict=False):
                        writer.copy_from_files(name, segs)
                else:
                    full = reader.read(pair.megatron, pair.layer)
                    for name, tensor in zip(pair.hf, megatron_to_hf(pair.transform, full, cfg), strict=False):
                        writer.write(name, tensor.to(target))
                    del full
                progress.update(1)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    progress.close()
    assert not queue


def served_chat_template(meg_dir: Path, thinking: str | None) -> str | None:
    """The chat template an export ships, rendering prompts as training did; None keeps the
    source tokenizer's (a checkpoint never trained here, and no --thinking)."""
    trained, recorded = cio.trained_thinking(meg_dir)
    if thinking is None and trained and recorded is None:
        raise UserError(f"{meg_dir} was trained on data prepared before the thinking policy was recorded: "
                        "pass --thinking keep|strip_history|drop (the prepare setting it was trained with)")
    if thinking is not None and recorded is not None and thinking != recorded:
        log.warning("--thinking %s overrides thinking=%s that %s was trained with: the served prompts will "
                    "differ from training", thinking, recorded, meg_dir)
    policy = thinking or recorded
    if policy is None:
        log.info("%s was not trained here: keeping its tokenizer's chat template (--thinking sets one)", meg_dir)
        return None
    log.info("chat template: thinking=%s (%s)", policy, "--thinking" if thinking else "as trained")
    return chat_template(policy)


def _write_configs(out: Path, meg_dir: Path, cfg: Qwen3Config, dtype: torch.dtype, default_gen: dict) -> None:
    hf_cfg = cfg.to_hf_dict()
    hf_cfg["torch_dtype"] = hf_dtype_name(dtype)
    (out / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    gen = meg_dir / "generation_config.json"
    if gen.is_file():
        shutil.copyfile(gen, out / "generation_config.json")
    else:
        (out / "generation_config.json").write_text(json.dumps(default_gen, indent=2) + "\n")
