"""Lets megatron-core's CUDA-only code paths run on a CPU with gloo.

megatron-core assumes CUDA in a few narrow places (device placement, RNG
tracking, `Tensor.type()` strings). This module patches exactly those, and only
when CUDA is absent, so CPU CI exercises the same megatron-core code as a GPU
cluster. Nothing else in nemo_terminal checks for CUDA: ask `runtime.device`.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode

from nemo_terminal.runtime.device import accelerator_present
from nemo_terminal.runtime.megatron_compat import replace_rng_tracker

_ACTIVE = False

# Factory functions whose `device=` keyword may say "cuda".
_FACTORIES = {
    torch.empty, torch.zeros, torch.ones, torch.full, torch.arange, torch.tensor,
    torch.rand, torch.randn, torch.randint, torch.empty_like, torch.zeros_like,
    torch.ones_like, torch.full_like, torch.rand_like, torch.randn_like, torch.as_tensor,
    torch.linspace, torch.eye, torch.empty_strided,
}


def _is_cuda(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, int) and not isinstance(device, bool):  # a bool is Tensor.to's non_blocking
        return True  # megatron passes torch.cuda.current_device() ints
    return isinstance(device, str) and device.startswith("cuda")


class _CudaToCpu(TorchFunctionMode):
    """Redirects CUDA placement to the CPU inside torch function dispatch."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _FACTORIES:
            if _is_cuda(kwargs.get("device")):
                kwargs["device"] = "cpu"
            kwargs.pop("pin_memory", None)  # pinning needs CUDA; megatron's CP rope asks for it
        elif func is torch.Tensor.cuda:
            return args[0]
        elif func is torch.Tensor.to:
            if _is_cuda(kwargs.get("device")):
                kwargs["device"] = "cpu"
            args = tuple("cpu" if i > 0 and _is_cuda(a) else a for i, a in enumerate(args))
        elif func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            # Optimizer and grad clipping compare against "torch.cuda.FloatTensor" etc.
            return name.replace("torch.", "torch.cuda.", 1) if name.startswith("torch.") else name
        return func(*args, **kwargs)


class _CpuRngTracker:
    """Stands in for megatron's CudaRNGStatesTracker using the CPU generator.

    Named states still work, so dropout under TP is seeded per rank exactly as
    on GPU, and checkpoints can save and restore them.
    """

    def __init__(self, *args, **kwargs):
        self.reset()

    def reset(self):
        self.states_: dict[str, torch.Tensor] = {}
        self.seeds_: set[int] = set()
        self._is_initialized = False

    def is_initialized(self) -> bool:
        return self._is_initialized

    def get_states(self) -> dict[str, torch.Tensor]:
        return dict(self.states_)

    def set_states(self, states) -> None:
        self._is_initialized = True
        self.states_ = dict(states)

    def add(self, name: str, seed: int) -> None:
        self._is_initialized = True
        if seed in self.seeds_ or name in self.states_:
            raise RuntimeError(f"rng state {name!r} / seed {seed} already exists")
        self.seeds_.add(seed)
        self.states_[name] = torch.Generator().manual_seed(seed).get_state()

    @contextlib.contextmanager
    def fork(self, name: str = "model-parallel-rng"):
        if name not in self.states_:
            raise RuntimeError(f"rng state {name!r} is not added")
        outer = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(outer)


def activate() -> None:
    """Install the CPU patches once per process. A no-op when CUDA is present."""
    global _ACTIVE
    if _ACTIVE or accelerator_present():
        return
    torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment]
    torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    torch.cuda.manual_seed = lambda *a, **k: None  # type: ignore[assignment]
    torch.cuda.manual_seed_all = lambda *a, **k: None  # type: ignore[assignment]
    replace_rng_tracker(_CpuRngTracker)
    _CudaToCpu().__enter__()  # process-wide for the rest of this process
    _ACTIVE = True

