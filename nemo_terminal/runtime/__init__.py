"""Process setup: distributed init, megatron parallel state, the CPU compatibility layer.

Attributes load lazily so that torch-free users (e.g. `prepare` workers that
only need ParallelConfig) do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ParallelConfig": "nemo_terminal.runtime.parallel",
    "Device": "nemo_terminal.runtime.device",
    "current_device": "nemo_terminal.runtime.device",
    "destroy": "nemo_terminal.runtime.distributed",
    "init_distributed": "nemo_terminal.runtime.distributed",
    "init_parallel_state": "nemo_terminal.runtime.distributed",
    "is_rank0": "nemo_terminal.runtime.distributed",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nemo_terminal.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
