"""Builds Qwen3 as a megatron-core GPTModel on the right layer spec for this machine.

The spec is the only model-level difference between CPU CI and a GPU cluster:
Transformer Engine where it runs, megatron-core's local modules otherwise, with
core attention behind `attention_backend`.
"""

from __future__ import annotations

from typing import Optional

from nemo_terminal.errors import UserError
from nemo_terminal.models.qwen3 import Qwen3Config, rope_kwargs
from nemo_terminal.runtime.cpu_compat import on_gpu

ATTENTION_BACKENDS = ("auto", "te", "torch", "local")


def te_available() -> bool:
    if not on_gpu():
        return False
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception:  # ImportError, or a TE build that does not match this torch
        return False
    return True


def resolve_attention_backend(backend: str) -> str:
    """`auto` -> `te` where Transformer Engine runs, else `torch` (our packed/CP attention)."""
    if backend not in ATTENTION_BACKENDS:
        raise UserError(f"model.attention_backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "te" if te_available() else _torch_or_local()
    if backend == "te" and not te_available():
        raise UserError("model.attention_backend=te needs a GPU with transformer_engine installed; use auto or torch")
    return backend


def _torch_or_local() -> str:
    try:
        from nemo_terminal.models import attention  # noqa: F401
    except ImportError:
        return "local"
    return "torch"


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
    vp_stage: Optional[int] = None,
):
    """One pipeline stage (or virtual stage) of Qwen3 as a GPTModel."""
    from megatron.core.models.gpt import GPTModel

    backend = resolve_attention_backend(attention_backend)
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
