"""How much memory a training plan may fill on one GPU (torch-free: the CLI's parser reads it)."""

from __future__ import annotations

GIB = 1024**3
# What torch can allocate on one GPU, in GiB: the driver's total, not the marketing "GB". An "80 GB"
# H100 reports 81,559 MiB = 79.6 GiB; a "141 GB" H200 about 139.8 GiB.
GPU_GIB = {"h100": 79.6, "h200": 139.8}
HEADROOM = 0.05
"""Default share of the GPU a plan leaves free: the activation formula is held to 5% of what
megatron-core really saves (tests/unit/recipes/test_planner_measured.py), and the allocator fragments."""


def usable_gib(gpu_gib: float, headroom: float = HEADROOM) -> float:
    """The memory a plan may fill: the GPU's capacity less the headroom share."""
    return gpu_gib * (1 - headroom)
