"""A random-weight tiny Qwen3 in Hugging Face format, built offline.

Tests, the demo and CI need a real Qwen3 checkpoint (real key names, real
vocabulary, real tokenizer) but cannot download one. The weights are random
but deterministic in the seed; norms are 1 plus noise so a swapped or missing
norm mapping changes the logits visibly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from nemo_terminal.errors import UserError
from nemo_terminal.models.qwen3 import QWEN3_VOCAB_SIZE, Qwen3Config
from nemo_terminal.models.tokenizer import ENDOFTEXT_ID, IM_END_ID, write_qwen3_tokenizer
from nemo_terminal.output_dir import HF_EXPORT, staged_output, write_export_marker

log = logging.getLogger(__name__)

WEIGHT_STD = 0.02
NORM_NOISE = 0.1


def tiny_config(
    *, num_layers: int, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, ffn_size: int,
    tie_embeddings: bool,
) -> Qwen3Config:
    if num_kv_heads < 1 or num_heads % num_kv_heads:
        raise UserError(
            f"--num-heads={num_heads} is not divisible by --num-kv-heads={num_kv_heads}; "
            "pick a kv head count that divides the head count"
        )
    return Qwen3Config(
        num_hidden_layers=num_layers,
        hidden_size=hidden_size,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        intermediate_size=ffn_size,
        vocab_size=QWEN3_VOCAB_SIZE,
        tie_word_embeddings=tie_embeddings,
        torch_dtype="float32",
        extra=dict(bos_token_id=ENDOFTEXT_ID, eos_token_id=IM_END_ID, initializer_range=WEIGHT_STD, use_cache=True),
    )


def random_weights(cfg: Qwen3Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic random fp32 weights: N(0, 0.02) matrices, 1 + N(0, 0.1) norms."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in cfg.hf_weight_shapes().items():
        if len(shape) == 1:
            out[name] = 1.0 + NORM_NOISE * torch.randn(shape, generator=gen)
        else:
            out[name] = WEIGHT_STD * torch.randn(shape, generator=gen)
    return out


def generation_config() -> dict:
    return dict(bos_token_id=ENDOFTEXT_ID, eos_token_id=[IM_END_ID, ENDOFTEXT_ID], pad_token_id=ENDOFTEXT_ID,
                do_sample=True, temperature=0.6, top_p=0.95, top_k=20)


def write_tiny_model(
    out: str | Path,
    *,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    head_dim: int = 32,
    ffn_size: int = 128,
    tie_embeddings: bool = True,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Write a random Qwen3 (config.json, model.safetensors, generation_config.json, tokenizer)."""
    out = Path(out)
    cfg = tiny_config(num_layers=num_layers, hidden_size=hidden_size, num_heads=num_heads,
                      num_kv_heads=num_kv_heads, head_dim=head_dim, ffn_size=ffn_size,
                      tie_embeddings=tie_embeddings)
    with staged_output(out, HF_EXPORT, force=force) as tmp:
        save_file(random_weights(cfg, seed), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg.to_hf_dict(), indent=2) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps(generation_config(), indent=2) + "\n")
        write_qwen3_tokenizer(tmp)
        write_export_marker(tmp, "nemo-terminal tiny-model")
    log.info("wrote a tiny Qwen3 (%d params) to %s", cfg.num_params(), out)
    return out
