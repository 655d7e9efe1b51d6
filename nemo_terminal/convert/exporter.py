"""megatron-core checkpoint (any TP/PP it was saved at) -> HF safetensors directory.

Each tensor group is loaded on its own as the full TP=1 tensor of one layer
(dist_checkpointing reassembles TP shards, and fc1's [gate_i; up_i] pieces),
transformed back to HF tensors and appended to a streaming safetensors
writer. Peak memory is one group. No network and no original HF directory:
config, generation config and tokenizer come from the checkpoint directory.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from nemo_terminal.convert import checkpoint_io as cio
from nemo_terminal.convert.hf_io import (StreamingSafetensorsWriter, hf_dtype_name, parse_dtype, plan_shards,
                                         write_index)
from nemo_terminal.convert.importer import prepare_output
from nemo_terminal.convert.mapping import Pair, expand, megatron_shape, megatron_to_hf
from nemo_terminal.errors import UserError
from nemo_terminal.models.qwen3 import Qwen3Config

log = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # the Hub's usual "5GB" shards


def _checkpoint_tensors(it: Path) -> dict:
    from megatron.core import dist_checkpointing

    try:
        return dist_checkpointing.load_tensors_metadata(str(it))
    except Exception as err:
        raise UserError(f"{it}: cannot read the dist checkpoint metadata: {err}") from None


def _check_checkpoint(it: Path, pairs: list[Pair], meta: dict, shapes: dict) -> None:
    """Every pair's key must be in the checkpoint with the config's shape; extra keys are
    optimizer/trainer state and are ignored."""
    missing = sorted({p.megatron for p in pairs} - set(meta))
    if missing:
        raise UserError(f"{it} lacks model tensors {missing}: is model_config.json from this checkpoint?")
    for p in pairs:
        want = shapes[(p.megatron, p.layer)]
        glob = tuple(meta[p.megatron].global_shape)
        got = glob[1:] if p.layer is not None else glob
        if tuple(got) != tuple(want):
            raise UserError(f"{it}: tensor {p.megatron} has shape {list(got)} per layer, "
                            f"model_config.json implies {list(want)}")


def _load_group(it: Path, pair: Pair, meta: dict, num_layers: int) -> torch.Tensor:
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing import ShardedTensor

    info = meta[pair.megatron]
    shape = tuple(info.global_shape)
    if pair.layer is None:
        sh = ShardedTensor.from_rank_offsets(pair.megatron, torch.empty(shape, dtype=info.dtype), replica_id=0)
    else:
        # The layer axis as a real axis of size 1 (not a prepended one): megatron then reads just this
        # slice, where a prepended axis would make torch expect every layer's shard in a world of one.
        sh = ShardedTensor.from_rank_offsets(pair.megatron, torch.empty((1, *shape[1:]), dtype=info.dtype),
                                             (0, pair.layer, num_layers), replica_id=0)
    loaded = dist_checkpointing.load({"t": sh}, str(it), validate_access_integrity=False)
    return loaded["t"] if pair.layer is None else loaded["t"][0]


def export_hf(meg_dir: str | Path, out: str | Path, dtype: str | None = None, force: bool = False,
              max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, show_progress: bool = True) -> Path:
    """Write an HF Qwen3 directory from the checkpoint `latest` points to; return `out`."""
    from tqdm import tqdm

    from nemo_terminal.models.tiny import generation_config, hf_weight_shapes
    from nemo_terminal.runtime import init_distributed

    meg_dir, out = Path(meg_dir), Path(out)
    cfg = cio.read_model_config(meg_dir)
    it = cio.resolve_checkpoint(meg_dir)
    tok_dir = cio.tokenizer_dir(meg_dir)
    target = parse_dtype(dtype, cfg.torch_dtype)
    if out.resolve() == meg_dir.resolve():
        raise UserError(f"--out {out} is the checkpoint directory itself; choose another directory")
    prepare_output(out, force)
    init_distributed()
    meta = _checkpoint_tensors(it)
    pairs = expand(cfg)
    hf_shapes = hf_weight_shapes(cfg)
    meg_shapes = {(p.megatron, p.layer): megatron_shape(p, [hf_shapes[h] for h in p.hf]) for p in pairs}
    _check_checkpoint(it, pairs, meta, meg_shapes)

    shards = plan_shards([[(h, hf_shapes[h]) for h in p.hf] for p in pairs], target, max_shard_bytes)
    progress = tqdm(total=len(pairs), desc="export", unit="group", disable=not show_progress)
    queue = list(pairs)
    for shard in shards:
        writer = StreamingSafetensorsWriter(out / shard.file, shard.entries, target)
        try:
            names = [n for n, _ in shard.entries]
            while queue and queue[0].hf[0] in names:
                pair = queue.pop(0)
                full = _load_group(it, pair, meta, cfg.num_hidden_layers)
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
