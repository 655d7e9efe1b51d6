"""Every megatron-core internal the package leans on, in one place, with the versions it was tested with.

megatron-core's public API does not cover four things we need: writing a torch_dist checkpoint
chunk by chunk (import), the sharded-state preprocessing its save does (the checkpoint's key
layout), the RNG tracker (swapped for a CPU one), and the optimizer's step split into its
pieces (to skip a step on a NaN/Inf gradient norm without computing the norm twice). Each is
reached through a function here, so a megatron-core upgrade is checked in one file: the
tests that exercise these (import/export round trips, resume, the NaN-skip test) run against
`TESTED_VERSIONS`. An untested version logs one warning at start-up and changes nothing else.

The internals are imported inside the functions that use them (`# lazy: internal`): a
megatron-core that moved one fails only the feature that needs it, with an ImportError naming
it, after the version warning, instead of failing every command at import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch

log = logging.getLogger(__name__)

# megatron-core releases the test suite has run against; pyproject.toml declares the same range.
TESTED_VERSIONS = ("0.16.1",)
_warned = False


def installed_version() -> str | None:
    try:
        return version("megatron-core")
    except PackageNotFoundError:  # a source checkout on PYTHONPATH (NGC images): no dist metadata
        import megatron.core  # lazy: only a source checkout without package metadata gets here

        return getattr(megatron.core, "__version__", None)


def check_version() -> None:
    """Log ONE warning per process when megatron-core is not a tested version; never raises."""
    global _warned
    found = installed_version()
    if _warned or found in TESTED_VERSIONS:
        return
    _warned = True
    log.warning("megatron-core %s is untested with nemo_terminal (tested: %s); the internals listed in "
                "nemo_terminal/runtime/megatron_compat.py may have changed", found, ", ".join(TESTED_VERSIONS))


# -- dist_checkpointing: the torch_dist layout ----------------------------------------------------


def preprocess_for_save(sharded: dict) -> dict:
    """The sharded state dict after the preprocessing `dist_checkpointing.save` applies (factories
    such as fc1's gate/up split resolved), i.e. the tensors as the checkpoint stores them."""
    from megatron.core.dist_checkpointing.state_dict_utils import save_preprocess  # lazy: internal

    sharded, _common = save_preprocess(sharded, validate_access_integrity=False)
    return sharded


def to_dcp_state_dict(sharded: dict) -> dict:
    """A preprocessed sharded state dict as the flat torch.distributed.checkpoint state dict that
    megatron's torch_dist strategy saves (keys = ShardedTensor keys, main replicas only)."""
    from megatron.core.dist_checkpointing.strategies.torch import (  # lazy: internal
        _replace_state_dict_keys_with_sharded_keys,
        mcore_to_pyt_state_dict,
    )

    flat, _, _ = _replace_state_dict_keys_with_sharded_keys(sharded, keep_only_main_replica=True)
    return mcore_to_pyt_state_dict(flat, is_loading=False)


def save_planner_class() -> type:
    """megatron's DCP save planner (flatten_state_dict=False), to subclass for chunk-wise writes."""
    from megatron.core.dist_checkpointing.strategies.torch import MCoreSavePlanner  # lazy: internal

    return MCoreSavePlanner


def replace_writer_results_queue(make_queue: Callable[[], Any]) -> bool:
    """Hand megatron's async checkpoint writer its results queue before it makes its own (the
    module global `filesystem_async._results_queue`, None until first use in 0.12-0.16).
    False, and nothing done, when that global is not where those versions keep it."""
    try:
        from megatron.core.dist_checkpointing.strategies import filesystem_async  # lazy: internal
    except ImportError:
        return False
    if getattr(filesystem_async, "_results_queue", "absent") is not None:
        return False
    filesystem_async._results_queue = make_queue()
    return True


# -- the RNG tracker ------------------------------------------------------------------------------


def replace_rng_tracker(tracker_cls: type) -> None:
    """Make megatron's model-parallel RNG tracker an instance of `tracker_cls`, now and after any
    later `initialize_rng_tracker` call (megatron re-creates it from module globals)."""
    from megatron.core.tensor_parallel import random as mp_random  # lazy: internal

    def keep_tracker(*args: Any, force_reset: bool = False, **kwargs: Any) -> None:
        if force_reset or mp_random._CUDA_RNG_STATE_TRACKER is None:
            mp_random._CUDA_RNG_STATE_TRACKER = tracker_cls()
        mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True

    mp_random.CudaRNGStatesTracker = tracker_cls
    mp_random._CUDA_RNG_STATE_TRACKER = tracker_cls()
    mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True
    mp_random.initialize_rng_tracker = keep_tracker


# -- the optimizer step, in pieces ----------------------------------------------------------------


def inner_optimizers(optimizer) -> list:
    """The per-group megatron optimizers of a (possibly chained) megatron optimizer."""
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


def prepare_and_norm(optimizer) -> float:
    """Copy model grads to main grads and return their global L2 norm (`step()`'s first half)."""
    optimizer.prepare_grads()
    return float(optimizer.get_grad_norm())


def clip_to_norm(optimizer, clip_grad: float, norm: float) -> None:
    """Clip main grads by an already computed global norm, as `step()` would."""
    from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32  # lazy: internal

    for opt in inner_optimizers(optimizer):
        params = opt.get_parameters()
        if clip_grad > 0 and params and not getattr(opt, "is_stub_optimizer", False):
            clip_grad_by_total_norm_fp32(
                params, max_norm=clip_grad, total_norm=norm,
                use_decoupled_grad=opt.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8,
            )


def step_with_ready_grads(optimizer) -> None:
    """Apply the update from prepared (and clipped) main grads (`step()`'s second half)."""
    optimizer.step_with_ready_grads()


def torch_adam_optimizers(optimizer) -> list:
    """The torch.optim Adam/AdamW instances megatron falls back to without TE/apex (possibly none)."""
    inner = (getattr(o, "optimizer", None) for o in inner_optimizers(optimizer))
    return [o for o in inner if isinstance(o, (torch.optim.Adam, torch.optim.AdamW))]

