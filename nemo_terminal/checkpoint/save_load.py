"""Training checkpoints: megatron-core dist checkpoints published atomically.

Layout (shared with import/export): run_dir/iter_<7-digit step>/ holds a
torch_dist checkpoint; run_dir/latest names the newest COMPLETE one. A save
writes into iter_X.tmp, renames it when every rank is done, then replaces
`latest` — so a process killed mid-save leaves `latest` on the previous good
checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing import ShardedTensor
from megatron.core.dist_checkpointing.dict_utils import nested_values
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.serialization import load_sharded_metadata

from nemo_terminal.checkpoint import directory as cio
from nemo_terminal.checkpoint import integrity
from nemo_terminal.checkpoint.preload import check_before_load
from nemo_terminal.checkpoint.safe_pickle import allowed_globals
from nemo_terminal.checkpoint.writer_processes import make_writers_die_with_trainer
from nemo_terminal.errors import UserError
from nemo_terminal.models.provider import build_gpt_model, to_transformer_config
from nemo_terminal.models.qwen3 import Qwen3Config
from nemo_terminal.runtime.megatron_compat import preprocess_for_save

log = logging.getLogger(__name__)


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint `latest` points to, or None when the directory has none yet."""
    if not (Path(root) / cio.LATEST).is_file():
        return None
    return cio.resolve_checkpoint(root)


def save(state: dict[str, Any], root: Path, step: int, keep_last: int, files: dict[str, str] | None = None) -> Path:
    """Collective: every rank calls it with its sharded state dict. `files` (name -> text, e.g.
    Megatron-Bridge's run_config.yaml) are written by rank 0 into the checkpoint before it is published."""
    make_writers_die_with_trainer()
    rank0 = dist.get_rank() == 0
    final = root / cio.iter_name(step)
    tmp = root / (cio.iter_name(step) + ".tmp")
    if rank0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    dist_checkpointing.save(state, str(tmp))
    if rank0:
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
    dist.barrier()
    _record_hashes(tmp)
    if rank0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        cio.write_latest(root, final.name)
        _prune(root, keep_last)
    dist.barrier()
    return final


def _record_hashes(tmp: Path) -> None:
    """Every rank hashes its share of the files; rank 0 writes the record into the checkpoint."""
    names = integrity.checkpoint_files(tmp)
    mine = integrity.hash_share(tmp, names, dist.get_rank(), dist.get_world_size())
    shares: list = [None] * dist.get_world_size()
    dist.all_gather_object(shares, mine)
    if dist.get_rank() == 0:
        integrity.write_record(tmp, {k: v for share in shares for k, v in share.items()})


def step_of(path: Path) -> int:
    return int(path.name[len("iter_"):])


def complete_checkpoints(root: Path) -> list[Path]:
    """iter_XXXXXXX dirs with megatron's metadata.json, by step number (never by name)."""
    done = [p for p in Path(root).iterdir() if cio.ITER_RE.match(p.name) and (p / "metadata.json").is_file()]
    return sorted(done, key=step_of)


def _prune(root: Path, keep_last: int) -> None:
    """Delete all but the keep_last highest-step checkpoints; never the one `latest` names."""
    current = (root / cio.LATEST).read_text().strip()
    done = complete_checkpoints(root)
    for old in done[:-keep_last]:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("iter_*.tmp"):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    log.info("checkpoint %s published; keeping %s", current, [p.name for p in done[-keep_last:]])


def roll_back(root: Path, resume: Path) -> Path | None:
    """Resuming `root` from an earlier checkpoint: move every newer iter_ dir to
    root/rolled_back/<UTC time>/, after pointing `latest` (and Megatron-LM's tracker file) at
    `resume`. Rank 0 only. Returns the folder they went to, or None when nothing was newer."""
    step = step_of(resume)
    newer = [p for p in root.iterdir() if (cio.ITER_RE.match(p.name) or p.name.endswith(".tmp"))
             and p.name.startswith("iter_") and int(p.name[5:12]) > step]
    if not newer:
        return None
    # Pointers first: whatever happens next, `latest` names a complete checkpoint.
    cio.write_latest(root, resume.name)
    dest = root / "rolled_back" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest.mkdir(parents=True, exist_ok=True)
    for p in sorted(newer):
        os.replace(p, dest / p.name)
    log.warning("rolled back to %s: moved %s to %s (never deleted)", resume.name, [p.name for p in newer], dest)
    return dest


def load(template: dict[str, Any], path: Path) -> dict[str, Any]:
    with allowed_globals():  # megatron's common.pt load: the allow-list check_before_load applied
        return dist_checkpointing.load(template, str(path))


def drop_absent_extra_state(template: dict[str, Any], path: Path) -> dict[str, Any]:
    """Remove `_extra_state` entries the checkpoint lacks from a load template.

    Transformer Engine modules carry `_extra_state` (FP8 metadata) that the
    local CPU spec does not have, so a checkpoint written on CPU (e.g. by
    `import`) lacks e.g. core_attention._extra_state. The state itself is
    re-created by TE; only real weights must match.
    """
    present = set(load_sharded_metadata(str(path)))

    def keep(value: Any) -> bool:
        return not (
            isinstance(value, ShardedObject) and "_extra_state" in value.key and value.unique_key not in present
        )

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items() if keep(v)}
        return node

    return walk(template)


def load_model_weights(model_chunks: Sequence, iter_dir: str | Path) -> None:
    """Load the "model" entry of a checkpoint into GPTModel chunks built at any TP/PP/VPP.

    Every rank calls this (it is collective). Optimizer and other entries are ignored.
    """
    iter_dir = Path(iter_dir)
    if not (iter_dir / "metadata.json").is_file():
        raise UserError(f"{iter_dir} is not a complete dist checkpoint (no metadata.json)")
    check_before_load(iter_dir)  # restricted unpickler, sizes, content hashes (collective)
    for chunk in model_chunks:
        # `_extra_state` a checkpoint lacks (one written by another layer spec) is no weight: not asked for.
        template = drop_absent_extra_state({"model": chunk.sharded_state_dict()}, iter_dir)
        with allowed_globals():  # megatron's common.pt load: the allow-list check_before_load applied
            loaded = dist_checkpointing.load(template, str(iter_dir))
        result = chunk.load_state_dict(loaded["model"], strict=False)
        wrong = [k for k in (*result.missing_keys, *result.unexpected_keys) if not k.endswith("_extra_state")]
        if wrong:
            raise UserError(f"checkpoint {iter_dir} does not match the model: {wrong[:8]}")


def meta_sharded_state_dict(cfg: Qwen3Config, dtype=None) -> dict:
    """The "model" sharded state dict a TP=1/PP=1 GPTModel of `cfg` would save, on the meta device.

    Needs megatron parallel state at TP=1/PP=1. Factories (fc1's gate/up split) are applied, so
    values are ShardedTensors (data on meta, in `dtype`) and ShardedObjects (_extra_state).
    """
    with torch.device("meta"):
        model = build_gpt_model(cfg, to_transformer_config(cfg), attention_backend="local")
    sharded = {"model": model.sharded_state_dict()}
    sharded = preprocess_for_save(sharded)
    if dtype is not None:
        for sh in nested_values(sharded):
            if isinstance(sh, ShardedTensor):
                sh.data = torch.empty(sh.data.shape, dtype=dtype, device="meta")
    return sharded
