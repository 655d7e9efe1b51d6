"""What the launcher (torchrun or srun) says about this process, readable before torch is imported."""

from __future__ import annotations

import os
import socket


def launch_rank() -> int:
    """Global rank from torchrun (RANK) or srun (SLURM_PROCID); 0 for a plain process."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


# What torchrun (incl. torchelastic) and srun set to place a process in a distributed job.
_RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                   "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT",
                   "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS",
                   "TORCH_NCCL_ASYNC_ERROR_HANDLING", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS",
                   "SLURM_NPROCS", "SLURM_STEP_NUM_TASKS")


def single_process_env() -> dict[str, str]:
    """This environment without the launcher's rank variables: a child started with it (the
    on-the-fly import) forms its own world of one, on its own free port, instead of joining
    the parent's rendezvous as a second rank 0."""
    return {k: v for k, v in os.environ.items()
            if k not in _RANK_VARIABLES and not k.startswith("TORCHELASTIC_")}


def free_port() -> int:
    """An unused local TCP port, for a rendezvous on this machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
