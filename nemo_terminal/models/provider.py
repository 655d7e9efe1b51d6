"""Builds Qwen3 as a megatron-core GPTModel on the right layer spec for this machine.

The spec is the only model-level difference between CPU CI and a GPU cluster:
Transformer Engine where it runs, megatron-core's local modules otherwise, with
core attention behind `attention_backend`.
"""

from __future__ import annotations

import logging

from nemo_terminal.errors import UserError
from nemo_terminal.models.qwen3 import Qwen3Config, rope_kwargs
from nemo_terminal.options import AttentionBackend
from nemo_terminal.runtime.device import accelerator_present, current_device

log = logging.getLogger(__name__)

ATTENTION_BACKENDS = AttentionBackend.values()  # the one list: nemo_terminal/options.py
_logged: set[str] = set()  # backends already announced by this process


def te_import_error() -> str | None:
    """Why Transformer Engine cannot run here (one line), or None when it can."""
    if not accelerator_present():
        return "no CUDA device is visible"
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception as err:  # ImportError, or a TE build that does not match this torch: keep the reason
        first_line = str(err).splitlines()[0][:300] if str(err) else ""
        return f"import transformer_engine.pytorch failed: {type(err).__name__}: {first_line}"
    return None


def te_available() -> bool:
    return te_import_error() is None


def resolve_attention_backend(backend: str, sequence_parallel: bool = False) -> str:
    """`auto` -> `te` where Transformer Engine runs, else `torch` (our packed/CP attention).

    Sequence parallelism needs TE: megatron-core's torch norm (`WrappedTorchNorm`, the local
    spec's RMSNorm) asserts it is off, so that combination is refused here with the reason.
    """
    if backend not in ATTENTION_BACKENDS:
        raise UserError(f"model.attention_backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    te_error = te_import_error()
    if backend == "te" and te_error:
        raise UserError(f"model.attention_backend=te needs Transformer Engine on a GPU ({te_error}); "
                        "install a TE build matching this torch, or use auto or torch")
    resolved = backend if backend != "auto" else ("te" if te_error is None else "torch")
    if sequence_parallel and resolved != "te":
        why = f"model.attention_backend={backend}"
        if backend == "auto":
            why = f"Transformer Engine is unusable ({te_error})"
        raise UserError(f"parallel.sequence_parallel=true needs the Transformer Engine layer spec, but {why}; "
                        "megatron-core's torch RMSNorm cannot run sequence parallelism. Fix TE (a build matching "
                        "this torch, see docs/cluster.md) or set parallel.sequence_parallel=false")
    if backend == "auto" and te_error and accelerator_present():
        log.warning("attention_backend=auto: falling back to %s because %s", resolved, te_error)
    return resolved


def announce_backend(backend: str) -> None:
    """Log the chosen attention backend (and the torch backend's kernel here) once per process."""
    if backend in _logged:
        return
    _logged.add(backend)
    if backend == "te":
        import transformer_engine

        log.info("attention backend: te (Transformer Engine %s, its fused attention)", transformer_engine.__version__)
    elif backend == "torch":
        from nemo_terminal.models.attention import resolve_kernel

        kernel = resolve_kernel("auto", current_device().torch_device)
        log.info("attention backend: torch (nemo_terminal's packed/CP attention, kernel %s)", kernel)
    else:
        log.info("attention backend: local (megatron-core's unfused DotProductAttention; no packing or CP)")


def layer_spec(backend: str):
    """The transformer layer ModuleSpec for a resolved attention backend."""
    if backend == "te":
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=True)
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    spec = get_gpt_layer_local_spec(qk_layernorm=True, normalization="RMSNorm")
    if backend == "torch":
        from nemo_terminal.models.attention import TorchCoreAttention

        spec.submodules.self_attention.submodules.core_attention = TorchCoreAttention
    return spec


def build_gpt_model(
    cfg: Qwen3Config,
    transformer_config,
    attention_backend: str = "auto",
    pre_process: bool = True,
    post_process: bool = True,
    vp_stage: int | None = None,
):
    """One pipeline stage (or virtual stage) of Qwen3 as a GPTModel."""
    from megatron.core.models.gpt import GPTModel

    backend = resolve_attention_backend(attention_backend, transformer_config.sequence_parallel)
    announce_backend(backend)
    kwargs = dict(
        config=transformer_config,
        transformer_layer_spec=layer_spec(backend),
        vocab_size=cfg.vocab_size,
        max_sequence_length=cfg.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=cfg.tie_word_embeddings,
        parallel_output=True,
        **rope_kwargs(cfg),
    )
    if vp_stage is not None:
        kwargs["vp_stage"] = vp_stage
    return GPTModel(**kwargs)
