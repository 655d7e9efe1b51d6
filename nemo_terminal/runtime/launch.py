"""What the launcher (torchrun or srun) says about this process, readable before torch is imported."""

from __future__ import annotations

import os


def launch_rank() -> int:
    """Global rank from torchrun (RANK) or srun (SLURM_PROCID); 0 for a plain process."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
