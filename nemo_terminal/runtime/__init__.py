"""Process setup: distributed init, megatron parallel state, the CPU compatibility layer."""

from nemo_terminal.runtime.cpu_compat import on_gpu
from nemo_terminal.runtime.distributed import destroy, init_distributed, init_parallel_state, is_rank0
from nemo_terminal.runtime.parallel import ParallelConfig

__all__ = ["ParallelConfig", "destroy", "init_distributed", "init_parallel_state", "is_rank0", "on_gpu"]
