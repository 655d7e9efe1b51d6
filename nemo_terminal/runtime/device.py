"""The one place that asks which device this process computes on.

Everything outside `runtime/` takes a `Device` and never checks for CUDA itself, so the CPU and
GPU code paths are the same lines: they differ only in the device object (and, decided from
it, the collective backend, the layer spec and the attention kernel). CPU tests therefore run
every device move, every collective's tensor placement and every pinning decision a GPU run
makes, with a device object that happens to be the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

# Dense bf16 peak FLOP/s by device-name substring, for MFU (no entry: MFU is not reported).
_PEAK_BF16_FLOPS = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("B200", 2250e12))


def accelerator_present() -> bool:
    """Whether a CUDA device is usable here: the single CUDA check of the package."""
    return torch.cuda.is_available()


def local_device_index(local_rank: int, device_count: int) -> int:
    """The GPU a process binds to: clusters that give each task one visible GPU (srun with
    --gpus-per-task) show device 0 only, while LOCAL_RANK still counts tasks on the node."""
    if device_count < 1:
        raise ValueError("no CUDA device is visible")
    return local_rank % device_count


@dataclass(frozen=True)
class Device:
    """Where this process's tensors live, and what follows from that."""

    torch_device: torch.device

    @property
    def is_accelerator(self) -> bool:
        return self.torch_device.type == "cuda"

    @property
    def backend(self) -> str:
        """The torch.distributed backend for collectives on this device's tensors."""
        return "nccl" if self.is_accelerator else "gloo"

    @property
    def pin_memory(self) -> bool:
        """Pin host batches (page-locked memory only helps copies to an accelerator)."""
        return self.is_accelerator

    def move(self, value: Any) -> Any:
        """A tensor or module on this device; dicts, lists and tuples moved element-wise; other values unchanged."""
        if isinstance(value, (torch.Tensor, torch.nn.Module)):
            return value.to(self.torch_device, non_blocking=self.is_accelerator)
        if isinstance(value, dict):
            return {k: self.move(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.move(v) for v in value)
        return value

    def zeros(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A zero tensor on this device (collectives need their tensors on the backend's device)."""
        return torch.zeros(*shape, dtype=dtype, device=self.torch_device)

    def name(self) -> str:
        return torch.cuda.get_device_name(self.torch_device) if self.is_accelerator else "cpu"

    def peak_bf16_flops(self) -> float | None:
        """Dense bf16 peak of this device, for MFU; None on CPU or an unlisted GPU."""
        if not self.is_accelerator:
            return None
        name = self.name()
        return next((flops for key, flops in _PEAK_BF16_FLOPS if key in name), None)


CPU = Device(torch.device("cpu"))
_current: Device | None = None


def select_device(local_rank: int | None = None) -> Device:
    """Bind this process to its GPU (LOCAL_RANK modulo the visible GPUs) or the CPU, once."""
    global _current
    if not accelerator_present():
        _current = CPU
        return _current
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    index = local_device_index(local_rank, torch.cuda.device_count())
    torch.cuda.set_device(index)
    _current = Device(torch.device("cuda", index))
    return _current


def current_device() -> Device:
    """The device `select_device` chose (selecting it now if no one has)."""
    return _current if _current is not None else select_device()
