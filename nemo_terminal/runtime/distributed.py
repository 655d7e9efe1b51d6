"""torch.distributed and megatron-core parallel state, under torchrun, srun or a plain process."""

from __future__ import annotations

import datetime
import logging
import os
import subprocess

import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel

from nemo_terminal.runtime import container_check, cpu_compat, megatron_compat
from nemo_terminal.runtime.device import select_device
from nemo_terminal.runtime.launch import free_port
from nemo_terminal.runtime.parallel import ParallelConfig

log = logging.getLogger(__name__)


def _env_from_slurm() -> None:
    """Translate srun's task variables into torchrun's, when torchrun did not set them."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ.get("SLURM_NTASKS", "1")
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST", "")
        first = "127.0.0.1"
        if nodes:
            try:
                out = subprocess.run(
                    ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True
                )
                first = out.stdout.split()[0]
            except (OSError, subprocess.CalledProcessError, IndexError):
                first = nodes.split(",")[0]
        os.environ["MASTER_ADDR"] = first
    # A port derived from the job id, so every task of the job agrees without talking.
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))


def init_distributed(timeout_minutes: int = 30) -> tuple[int, int]:
    """Initialize the default process group (nccl on GPU, gloo on CPU); return (rank, world)."""
    cpu_compat.activate()
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    _env_from_slurm()
    own_world: dict[str, str] = {}
    if "RANK" not in os.environ:  # a plain `python` process: a world of one
        own_world = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_PORT=str(free_port()))
        own_world = {k: v for k, v in own_world.items() if k not in os.environ}
        own_world.setdefault("MASTER_ADDR", os.environ.get("MASTER_ADDR", "127.0.0.1"))
        os.environ.update(own_world)
    device = select_device(int(os.environ.get("LOCAL_RANK", "0")))
    if os.environ.get("RANK") == "0":
        container_check.warn_if_torch_replaced()
    dist.init_process_group(backend=device.backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    # A world of one made here is not advertised to child processes: a CLI run from this process
    # would otherwise join it as "rank 0" and fail to listen on the port this one holds.
    for name in own_world:
        os.environ.pop(name, None)
    return dist.get_rank(), dist.get_world_size()


def init_parallel_state(parallel: ParallelConfig, seed: int = 1234) -> None:
    """Create megatron-core's TP/PP/CP/DP groups and seed the model-parallel RNG."""
    init_distributed()
    megatron_compat.check_version()  # one warning on an untested megatron-core, nothing else
    parallel.dp(dist.get_world_size())  # raises on an impossible layout
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=parallel.tp,
        pipeline_model_parallel_size=parallel.pp,
        virtual_pipeline_model_parallel_size=parallel.vpp,
        context_parallel_size=parallel.cp,
    )
    tensor_parallel.model_parallel_cuda_manual_seed(seed)


def destroy() -> None:
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0
