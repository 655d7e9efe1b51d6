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
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import torch.distributed as dist

from nemo_terminal.errors import UserError

log = logging.getLogger(__name__)
_ITER = re.compile(r"^iter_(\d{7})$")


def iter_name(step: int) -> str:
    return f"iter_{step:07d}"


def write_latest(root: Path, name: str) -> None:
    tmp = root / f".latest.tmp-{os.getpid()}"
    tmp.write_text(name + "\n")
    os.replace(tmp, root / "latest")


def latest_checkpoint(root: Path) -> Optional[Path]:
    """The checkpoint `latest` points to, or None when the directory has none."""
    pointer = Path(root) / "latest"
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    if not (path / "metadata.json").is_file():
        raise UserError(f"{pointer} points to {path.name}, which is missing or incomplete")
    return path


def save(state: dict[str, Any], root: Path, step: int, keep_last: int) -> Path:
    """Collective: every rank calls it with its sharded state dict."""
    from megatron.core import dist_checkpointing

    rank0 = dist.get_rank() == 0
    final = root / iter_name(step)
    tmp = root / (iter_name(step) + ".tmp")
    if rank0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    dist_checkpointing.save(state, str(tmp))
    dist.barrier()
    if rank0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        write_latest(root, final.name)
        _prune(root, keep_last)
    dist.barrier()
    return final


def _prune(root: Path, keep_last: int) -> None:
    done = sorted(p for p in root.iterdir() if _ITER.match(p.name) and p.is_dir())
    for old in done[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("iter_*.tmp"):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    log.info("checkpoint %s published; keeping %s", done[-1].name if done else "-", [p.name for p in done[-keep_last:]])


def load(template: dict[str, Any], path: Path) -> dict[str, Any]:
    from megatron.core import dist_checkpointing

    return dist_checkpointing.load(template, str(path))
