"""Where a run resumes from, and what happens to the run directory before it does.

`checkpoint.resume` names the checkpoint (auto: run_dir's `latest`; a run dir: its
`latest`; an `iter_XXXXXXX` dir: that one). Before anything is loaded:

- the resumed configuration is compared with the run's saved config.yaml (resume_config);
- resuming run_dir from an earlier checkpoint of its own is a rollback: newer checkpoints are
  moved to run_dir/rolled_back/<UTC time>/ (never deleted) after `latest` is pointed at the
  resumed one, so they can never outrank the new run's checkpoints when pruning;
- resuming from another run's checkpoint into a run_dir that already holds checkpoints is refused.

Collective: every rank calls `resume_point`; rank 0 moves files, then all ranks meet.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch.distributed as dist

from nemo_terminal.checkpoint import directory as cio
from nemo_terminal.checkpoint import save_load
from nemo_terminal.checkpoint.preload import newest_older_complete
from nemo_terminal.errors import UserError
from nemo_terminal.training.resume_config import check_resume_config

log = logging.getLogger("nemo_terminal.train")


def _named_checkpoint(resume: str) -> Path:
    path = Path(resume)
    if (path / cio.LATEST).is_file():
        return cio.resolve_checkpoint(path)
    if not (path / "metadata.json").is_file():
        raise UserError(f"checkpoint.resume={resume} is not a complete checkpoint (no metadata.json or latest)"
                        + _older_hint(path))
    return path


def _older_hint(missing: Path) -> str:
    older = newest_older_complete(missing) if cio.ITER_RE.match(missing.name) else None
    return f"; the newest older complete checkpoint is {older}: use checkpoint.resume={older}" if older else ""


def _find(cfg, run_dir: Path) -> Path | None:
    resume = cfg.checkpoint.resume
    if resume == "never":
        return None
    if resume == "auto":
        if not (run_dir / cio.LATEST).is_file():
            return None
        try:
            return cio.resolve_checkpoint(run_dir)
        except UserError as err:
            named = run_dir / (run_dir / cio.LATEST).read_text().strip()
            raise UserError(f"checkpoint.resume=auto: {err}{_older_hint(named)}") from None
    return _named_checkpoint(resume)


def resume_point(cfg, run_dir: Path) -> Path | None:
    """The checkpoint to resume from (None: a fresh start), after the checks and rollback above."""
    path = _find(cfg, run_dir)
    if path is None:
        return None
    check_resume_config(path.parent / "config.yaml", cfg, path)
    own = path.parent.resolve() == run_dir.resolve()
    if not own and run_dir.is_dir() and save_load.complete_checkpoints(run_dir):
        raise UserError(
            f"checkpoint.resume={path} belongs to another run, but run_dir={run_dir} already holds checkpoints "
            f"that would outrank it; use a new run_dir, or resume from one of {run_dir}'s own checkpoints"
        )
    if own and (not dist.is_initialized() or dist.get_rank() == 0):
        save_load.roll_back(run_dir, path)
    if dist.is_initialized():
        dist.barrier()
    return path
