"""Builds Qwen3 as a megatron-core GPTModel on the right layer spec for this machine.

The spec is the only model-level difference between CPU CI and a GPU cluster:
Transformer Engine where it runs, megatron-core's local modules otherwise, with
core attention behind `attention_backend`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import (
    get_gpt_layer_local_spec,
    get_gpt_layer_with_transformer_engine_spec,
)
from megatron.core.transformer import TransformerConfig

from nemo_terminal.errors import UserError
from nemo_terminal.models.attention import TorchCoreAttention, resolve_kernel
from nemo_terminal.models.qwen3 import Qwen3Config, rope_kwargs, yarn_fields
from nemo_terminal.options import AttentionBackend, Recompute
from nemo_terminal.runtime.device import accelerator_present, current_device

log = logging.getLogger(__name__)

ATTENTION_BACKENDS = AttentionBackend.values()  # the one list: nemo_terminal/options.py
_logged: set[str] = set()  # backends already announced by this process


def to_transformer_config(
    cfg: Qwen3Config,
    *,
    tp: int = 1,
    pp: int = 1,
    vpp: int | None = None,
    first_stage_layers: int | None = None,
    last_stage_layers: int | None = None,
    cp: int = 1,
    sequence_parallel: bool = False,
    precision: str = "fp32",
    recompute: str = "none",
    gradient_accumulation_fusion: bool = False,
    **overrides: Any,
):
    """Qwen3 shape + run settings -> megatron-core TransformerConfig."""
    bf16 = precision == "bf16"
    kwargs: dict[str, Any] = dict(
        num_layers=cfg.num_hidden_layers,
        hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.num_attention_heads,
        num_query_groups=cfg.num_key_value_heads,
        kv_channels=cfg.head_dim,  # explicit: heads*head_dim != hidden for 0.6B and 32B
        ffn_hidden_size=cfg.intermediate_size,
        normalization="RMSNorm",
        layernorm_epsilon=cfg.rms_norm_eps,
        qk_layernorm=True,
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bias_dropout_fusion=False,
        # Fused SwiGLU keeps only fc1's output (the unfused one also keeps the SiLU output and a copy
        # of the linear half: 10f instead of 6f bytes per token, training/planner.py). It runs on the
        # CPU too, but through torch.compile (10-20 s per process and shape), so CPU runs keep it off.
        bias_activation_fusion=accelerator_present(),
        apply_rope_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=gradient_accumulation_fusion,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=vpp,
        num_layers_in_first_pipeline_stage=first_stage_layers,  # uneven splits (runtime/pipeline_split.py)
        num_layers_in_last_pipeline_stage=last_stage_layers,
        context_parallel_size=cp,
        sequence_parallel=sequence_parallel,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
        autocast_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_cpu_initialization=True,
        calculate_per_token_loss=True,
        cross_entropy_loss_fusion=False,
    )
    if recompute == "full":
        kwargs.update(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    elif recompute == "selective":
        kwargs.update(recompute_granularity="selective")
    else:
        Recompute.parse(recompute, "train.recompute")  # the one list of values: nemo_terminal/options.py
    kwargs.update(overrides)
    tcfg = TransformerConfig(**kwargs)
    # GPTModel reads YaRN settings off the config; TransformerConfig has no such fields, so attach them.
    for key, value in yarn_fields(cfg).items():
        setattr(tcfg, key, value)
    return tcfg


def te_import_error() -> str | None:
    """Why Transformer Engine cannot run here (one line), or None when it can."""
    if not accelerator_present():
        return "no CUDA device is visible"
    try:
        import transformer_engine.pytorch  # noqa: F401  # lazy: optional (the gpu extra); its failure is reported
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
        import transformer_engine  # lazy: optional (the gpu extra)

        log.info("attention backend: te (Transformer Engine %s, its fused attention)", transformer_engine.__version__)
    elif backend == "torch":
        kernel = resolve_kernel("auto", current_device().torch_device)
        log.info("attention backend: torch (nemo_terminal's packed/CP attention, kernel %s)", kernel)
    else:
        log.info("attention backend: local (megatron-core's unfused DotProductAttention; no packing or CP)")


def layer_spec(backend: str):
    """The transformer layer ModuleSpec for a resolved attention backend."""
    if backend == "te":
        return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=True)

    spec = get_gpt_layer_local_spec(qk_layernorm=True, normalization="RMSNorm")
    if backend == "torch":
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
