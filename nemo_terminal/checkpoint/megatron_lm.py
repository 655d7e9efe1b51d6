"""Megatron-LM and Megatron-Bridge checkpoint metadata, both ways.

What their loaders read from a torch_dist checkpoint (docs/conversion.md cites the lines):

- `latest_checkpointed_iteration.txt`: the step, or `release` for weights to fine-tune from.
  Megatron-LM accepts an iteration >= 0, Bridge only > 0 or `release`, so an imported checkpoint
  is written as `release/` (both then load weights only, never optimizer or RNG state).
- `common.pt` `args` (Megatron-LM's argparse.Namespace; `--use-checkpoint-args` copies the model
  shape from it, Bridge falls back to it without run_config.yaml), `iteration`, `checkpoint_version`.
- `<iteration>/run_config.yaml` (Bridge): `model.tensor/pipeline_model_parallel_size` and the
  `checkpoint.save_optim/save_rng/fully_parallel_save` flags; the model shape for us.

Reading is safe: run_config.yaml with `yaml.safe_load`, `_target_` entries never resolved or
instantiated; common.pt through safe_pickle's allow-list (argparse.Namespace, torch dtypes).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from nemo_terminal.checkpoint.safe_pickle import torch_load
from nemo_terminal.errors import UserError
from nemo_terminal.models.qwen3 import Qwen3Config

RUN_CONFIG = "run_config.yaml"
CHECKPOINT_VERSION = 3.0  # Megatron-LM's current common.pt format (tp/pp sizes under their own names)
_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def megatron_lm_args(cfg: Qwen3Config, *, tp: int = 1, pp: int = 1, vpp: int | None = None,
                     first_stage_layers: int | None = None, last_stage_layers: int | None = None,
                     iteration: int = 0, world_size: int = 1) -> argparse.Namespace:
    """The Megatron-LM arguments of this model (the names `load_args_from_checkpoint` and
    `check_checkpoint_args` read). Optimizer and RNG state are never in a form Megatron-LM
    resumes from, so the args say they were not saved: `--load` then takes the weights only."""
    yarn = cfg.rope_scaling or {}
    precision = _DTYPES.get(cfg.torch_dtype, "fp32")
    args = dict(
        num_layers=cfg.num_hidden_layers, hidden_size=cfg.hidden_size, ffn_hidden_size=cfg.intermediate_size,
        num_attention_heads=cfg.num_attention_heads, num_query_groups=cfg.num_key_value_heads,
        group_query_attention=cfg.num_key_value_heads != cfg.num_attention_heads, kv_channels=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings, seq_length=cfg.max_position_embeddings,
        position_embedding_type="yarn" if yarn else "rope", use_rotary_position_embeddings=True,
        add_position_embedding=False, rotary_base=cfg.rope_theta, rotary_percent=1.0, rotary_interleaved=False,
        add_bias_linear=False, add_qkv_bias=False, swiglu=True, squared_relu=False,
        untie_embeddings_and_output_weights=not cfg.tie_word_embeddings, normalization="RMSNorm",
        norm_epsilon=cfg.rms_norm_eps, qk_layernorm=True, apply_layernorm_1p=False,
        apply_query_key_layer_scaling=False, attention_dropout=0.0, hidden_dropout=0.0,
        vocab_size=cfg.vocab_size, padded_vocab_size=cfg.vocab_size, make_vocab_size_divisible_by=128,
        tokenizer_type="HuggingFaceTokenizer", num_experts=None, multi_latent_attention=False,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, virtual_pipeline_model_parallel_size=vpp,
        decoder_first_pipeline_num_layers=first_stage_layers, decoder_last_pipeline_num_layers=last_stage_layers,
        world_size=world_size, data_parallel_size=max(world_size // (tp * pp), 1), ckpt_format="torch_dist",
        use_dist_ckpt=True, bf16=precision == "bf16", fp16=precision == "fp16",
        params_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32),
        no_save_optim=True, no_save_rng=True, iteration=iteration, consumed_train_samples=0,
        consumed_valid_samples=0,
    )
    if yarn:
        args.update(yarn_rotary_scaling_factor=yarn["factor"],
                    yarn_original_max_position_embeddings=yarn["original_max_position_embeddings"],
                    yarn_beta_fast=yarn.get("beta_fast", 32.0), yarn_beta_slow=yarn.get("beta_slow", 1.0),
                    yarn_mscale=1.0, yarn_mscale_all_dim=0.0)
    return argparse.Namespace(**args)


def common_state(cfg: Qwen3Config, iteration: int, **layout: Any) -> dict[str, Any]:
    """The non-sharded entries Megatron-LM and Bridge read from common.pt."""
    return {"args": megatron_lm_args(cfg, iteration=iteration, **layout), "checkpoint_version": CHECKPOINT_VERSION,
            "iteration": iteration}


def run_config(cfg: Qwen3Config, tp: int = 1, pp: int = 1) -> dict[str, Any]:
    """Bridge's run_config.yaml: the parts its loader reads, and the model shape (provider field names)."""
    yarn = cfg.rope_scaling or {}
    dtype = {"bfloat16": "torch.bfloat16", "float16": "torch.float16"}.get(cfg.torch_dtype, "torch.float32")
    model = dict(
        num_layers=cfg.num_hidden_layers, hidden_size=cfg.hidden_size, ffn_hidden_size=cfg.intermediate_size,
        num_attention_heads=cfg.num_attention_heads, num_query_groups=cfg.num_key_value_heads,
        kv_channels=cfg.head_dim, vocab_size=cfg.vocab_size, seq_length=cfg.max_position_embeddings,
        max_position_embeddings=cfg.max_position_embeddings,
        share_embeddings_and_output_weights=cfg.tie_word_embeddings, layernorm_epsilon=cfg.rms_norm_eps,
        rotary_base=cfg.rope_theta, rotary_percent=1.0, position_embedding_type="yarn" if yarn else "rope",
        normalization="RMSNorm", gated_linear_unit=True, add_bias_linear=False, add_qkv_bias=False,
        qk_layernorm=True, activation_func={"_target_": "torch.nn.functional.silu", "_call_": False},
        params_dtype={"_target_": dtype, "_call_": False}, bf16=dtype == "torch.bfloat16",
        fp16=dtype == "torch.float16", tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
        encoder_tensor_model_parallel_size=0, encoder_pipeline_model_parallel_size=0,
    )
    if yarn:
        model.update(yarn_rotary_scaling_factor=yarn["factor"],
                     yarn_original_max_position_embeddings=yarn["original_max_position_embeddings"],
                     yarn_beta_fast=yarn.get("beta_fast", 32.0), yarn_beta_slow=yarn.get("beta_slow", 1.0))
    return {"model": model, "checkpoint": {"save_optim": False, "save_rng": False, "fully_parallel_save": False}}


def run_config_yaml(cfg: Qwen3Config, tp: int = 1, pp: int = 1) -> str:
    return yaml.safe_dump(run_config(cfg, tp, pp), sort_keys=False)


def write_run_config(iter_dir: str | Path, cfg: Qwen3Config, tp: int = 1, pp: int = 1) -> None:
    path = Path(iter_dir) / RUN_CONFIG
    tmp = path.with_name(f".{RUN_CONFIG}.tmp.{os.getpid()}")
    tmp.write_text(run_config_yaml(cfg, tp, pp))
    os.replace(tmp, path)


# -- reading what they write ---------------------------------------------------------------------


def read_run_config(path: Path) -> dict[str, Any]:
    """Bridge's run_config.yaml, parsed as plain data (no `_target_` is resolved)."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise UserError(f"{path} has no `model` section: not a Megatron-Bridge run_config.yaml")
    return data


def read_saved_args(iter_dir: Path) -> argparse.Namespace | None:
    """Megatron-LM's `args` from common.pt through the restricted unpickler; None when absent."""
    path = iter_dir / "common.pt"
    if not path.is_file():
        return None
    state = torch_load(path, what="Megatron-LM's common.pt")
    args = state.get("args") if isinstance(state, dict) else None
    return args if isinstance(args, argparse.Namespace) else None
