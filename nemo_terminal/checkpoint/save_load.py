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
from pathlib import Path
from typing import Any

import torch.distributed as dist

from nemo_terminal.checkpoint import directory as cio
from nemo_terminal.checkpoint import integrity
from nemo_terminal.checkpoint.safe_pickle import allowed_globals
from nemo_terminal.checkpoint.writer_processes import make_writers_die_with_trainer

log = logging.getLogger(__name__)


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint `latest` points to, or None when the directory has none yet."""
    if not (Path(root) / cio.LATEST).is_file():
        return None
    return cio.resolve_checkpoint(root)


def save(state: dict[str, Any], root: Path, step: int, keep_last: int, files: dict[str, str] | None = None) -> Path:
    """Collective: every rank calls it with its sharded state dict. `files` (name -> text, e.g.
    Megatron-Bridge's run_config.yaml) are written by rank 0 into the checkpoint before it is published."""
    from megatron.core import dist_checkpointing

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
    from megatron.core import dist_checkpointing

    with allowed_globals():  # megatron's common.pt load: the allow-list check_before_load applied
        return dist_checkpointing.load(template, str(path))


def drop_absent_extra_state(template: dict[str, Any], path: Path) -> dict[str, Any]:
    """Remove `_extra_state` entries the checkpoint lacks from a load template.

    Transformer Engine modules carry `_extra_state` (FP8 metadata) that the
    local CPU spec does not have, so a checkpoint written on CPU (e.g. by
    `import`) lacks e.g. core_attention._extra_state. The state itself is
    re-created by TE; only real weights must match.
    """
    from megatron.core.dist_checkpointing.mapping import ShardedObject
    from megatron.core.dist_checkpointing.serialization import load_sharded_metadata

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
