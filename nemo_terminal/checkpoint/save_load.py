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
from pathlib import Path
from typing import Any, Optional

import torch.distributed as dist

from nemo_terminal.checkpoint import directory as cio

log = logging.getLogger(__name__)
def latest_checkpoint(root: Path) -> Optional[Path]:
    """The checkpoint `latest` points to, or None when the directory has none yet."""
    if not (Path(root) / cio.LATEST).is_file():
        return None
    return cio.resolve_checkpoint(root)


def save(state: dict[str, Any], root: Path, step: int, keep_last: int) -> Path:
    """Collective: every rank calls it with its sharded state dict."""
    from megatron.core import dist_checkpointing

    rank0 = dist.get_rank() == 0
    final = root / cio.iter_name(step)
    tmp = root / (cio.iter_name(step) + ".tmp")
    if rank0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    dist_checkpointing.save(state, str(tmp))
    dist.barrier()
    if rank0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        cio.write_latest(root, final.name)
        _prune(root, keep_last)
    dist.barrier()
    return final


def _prune(root: Path, keep_last: int) -> None:
    done = sorted(p for p in root.iterdir() if cio.ITER_RE.match(p.name) and p.is_dir())
    for old in done[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("iter_*.tmp"):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    log.info("checkpoint %s published; keeping %s", done[-1].name if done else "-", [p.name for p in done[-keep_last:]])


def load(template: dict[str, Any], path: Path) -> dict[str, Any]:
    from megatron.core import dist_checkpointing

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
        return not (isinstance(value, ShardedObject) and "_extra_state" in value.key and value.unique_key not in present)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items() if keep(v)}
        return node

    return walk(template)
