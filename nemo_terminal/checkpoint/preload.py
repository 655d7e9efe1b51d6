"""What every command checks before it loads a checkpoint (train, resume, verify, export).

1. Every file `.metadata` (read through the restricted unpickler) or the hash record names is
   present and of the right size.
2. Each pickle the load would unpickle goes through the restricted unpickler (safe_pickle).
3. Unless opted out, every file's content hash matches the record made at save.

Under torch.distributed the hashing is split over the ranks and the verdict is shared, so
every rank raises the same error. A failure names the newest older complete checkpoint
next to it and the `checkpoint.resume=` value that uses it; nothing falls back by itself.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch.distributed as dist

from nemo_terminal.checkpoint import integrity
from nemo_terminal.checkpoint.safe_pickle import UnsafeCheckpoint, check_checkpoint_pickles
from nemo_terminal.errors import UserError

log = logging.getLogger(__name__)


def _step(path: Path) -> int | None:
    name = path.name
    if name.startswith("iter_") and name[5:].isdigit() and len(name) == 12:
        return int(name[5:])
    return None


def newest_older_complete(iter_dir: Path) -> Path | None:
    """The highest-step sibling below `iter_dir`'s step that passes the structural checks."""
    iter_dir = Path(iter_dir)
    step = _step(iter_dir)
    if step is None or not iter_dir.parent.is_dir():
        return None
    older = sorted((p for p in iter_dir.parent.iterdir() if p.is_dir() and (_step(p) or 0) < step
                    and _step(p) is not None), key=_step, reverse=True)
    for cand in older:
        try:
            if not integrity.structural_problems(cand):
                return cand
        except UserError:
            continue
    return None


def _refuse(iter_dir: Path, problems: list[str]) -> UserError:
    shown = "; ".join(problems[:4]) + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else "")
    older = newest_older_complete(iter_dir)
    hint = (f"the newest older complete checkpoint is {older}: to use it, set checkpoint.resume={older}"
            if older else "no older complete checkpoint exists beside it")
    return UserError(f"checkpoint {iter_dir} is incomplete or corrupt: {shown}. {hint} "
                     "(nothing falls back automatically)")


def _local_problems(iter_dir: Path, verify_hashes: bool, rank: int, world: int) -> list[str]:
    try:
        found = integrity.structural_problems(iter_dir)  # reads .metadata through the restricted unpickler
        if not found:
            check_checkpoint_pickles(iter_dir)  # object shards and common.pt (and .metadata again)
        if not found and verify_hashes:
            found = integrity.hash_problems(iter_dir, rank, world)
        return found
    except UnsafeCheckpoint:
        raise  # the same on every rank: the pickles are shared files
    except UserError as err:
        return [str(err)]


def check_before_load(iter_dir: str | Path, verify_hashes: bool = True) -> None:
    """Raise a UserError if `iter_dir` must not be loaded. Collective under torch.distributed."""
    iter_dir = Path(iter_dir)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if rank == 0:
        has_hashes = integrity.say_if_unchecked(iter_dir)
        if has_hashes and not verify_hashes:
            print(f"note: content hashes of {iter_dir} not checked (opted out)", flush=True)
    found = _local_problems(iter_dir, verify_hashes, rank, world)
    if distributed:
        everyone: list = [None] * world
        dist.all_gather_object(everyone, found)
        found = sorted({p for ps in everyone for p in ps})
    if found:
        raise _refuse(iter_dir, found)
