"""Qwen3 dense: the model's shape, read from / written to HF config.json, and mapped to megatron-core.

No megatron-core here (a 2.5 s import that `export`, `plan` and `prepare` do not need): the
mapping to megatron-core's TransformerConfig is `models/provider.py::to_transformer_config`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_terminal.errors import UserError
from nemo_terminal.models import config_json

QWEN3_VOCAB_SIZE = 151936


@dataclass
class Qwen3Config:
    """The shape of a dense Qwen3. Field names follow HF's config.json."""

    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int = QWEN3_VOCAB_SIZE
    tie_word_embeddings: bool = False
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 40960
    rope_scaling: dict[str, Any] | None = None
    """None (plain rope) or YaRN as {"rope_type": "yarn", "factor", "original_max_position_embeddings"[, beta_fast,
    beta_slow, truncate]}: the one rope description that either config.json form is read into (config_json.py)."""
    torch_dtype: str = "bfloat16"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    """Other config.json keys (bos/eos ids, ...), carried through to export untouched."""

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise UserError(
                f"num_attention_heads={self.num_attention_heads} is not divisible by "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        for name in ("num_hidden_layers", "hidden_size", "num_attention_heads", "head_dim", "intermediate_size"):
            if getattr(self, name) < 1:
                raise UserError(f"config field {name} must be positive, got {getattr(self, name)}")

    # -- HF config.json ---------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, cfg: dict[str, Any], source: str = "config.json") -> Qwen3Config:
        """Either config.json form (transformers 4.51 or 5.x); see models/config_json.py for which
        fields are modelled, ignored or refused."""
        arch = cfg.get("architectures") or []
        if cfg.get("model_type") != "qwen3" or (arch and arch[0] != "Qwen3ForCausalLM"):
            raise UserError(
                f"{source}: model_type={cfg.get('model_type')!r} architectures={arch} is not a dense Qwen3 "
                "(expected model_type 'qwen3', Qwen3ForCausalLM)"
            )
        config_json.check_fixed(cfg, source)
        shape = {f.name for f in dataclasses.fields(cls)} - {"extra", "rope_theta", "rope_scaling", "torch_dtype"}
        required = ["num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size"]
        missing = [k for k in required if k not in cfg]
        if missing:
            raise UserError(f"{source}: missing keys {missing}")
        kwargs = {k: cfg[k] for k in shape if k in cfg and cfg[k] is not None}
        kwargs.setdefault("num_key_value_heads", cfg["num_attention_heads"])
        kwargs.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
        kwargs["rope_theta"], kwargs["rope_scaling"] = config_json.read_rope(cfg, source)
        dtype = config_json.read_dtype(cfg, source)
        if dtype is not None:
            kwargs["torch_dtype"] = dtype
        known = shape | {"architectures", "model_type"} | config_json.ROPE_KEYS | set(config_json.DTYPE_KEYS)
        fixed = set(config_json.FIXED)
        kwargs["extra"] = {k: v for k, v in cfg.items() if k not in known | fixed}
        config_json.warn_unknown([k for k in kwargs["extra"] if k not in config_json.IGNORED], source)
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, file: str | Path, missing_hint: str = "") -> Qwen3Config:
        """config.json (HF) or model_config.json (our checkpoints): both hold the HF form."""
        file = Path(file)
        if not file.is_file():
            raise UserError(f"{file} does not exist{missing_hint}")
        try:
            return cls.from_hf_dict(json.loads(file.read_text()), source=str(file))
        except json.JSONDecodeError as err:
            raise UserError(f"{file} is not valid JSON: {err}") from None

    @classmethod
    def from_hf_dir(cls, path: str | Path) -> Qwen3Config:
        return cls.from_json_file(Path(path) / "config.json", f": is {path} a Hugging Face model directory?")

    def to_hf_dict(self) -> dict[str, Any]:
        """The transformers-4.51 form (`rope_theta`, `rope_scaling`, `torch_dtype`), which transformers
        4.x (vLLM's pin) and 5.x both read: one rope description, one dtype key."""
        out: dict[str, Any] = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        out.update(
            architectures=["Qwen3ForCausalLM"],
            model_type="qwen3",
            attention_bias=False,
            attention_dropout=0.0,
            hidden_act="silu",
            use_sliding_window=False,
        )
        if out.get("rope_scaling") is None:
            out.pop("rope_scaling", None)
        return out

    def hf_weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of a Qwen3 HF checkpoint with its shape, in a fixed order."""
        h, d, f = self.hidden_size, self.head_dim, self.intermediate_size
        q, kv = self.num_attention_heads * d, self.num_key_value_heads * d
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab_size, h)}
        for i in range(self.num_hidden_layers):
            p = f"model.layers.{i}."
            shapes.update({
                p + "input_layernorm.weight": (h,),
                p + "self_attn.q_proj.weight": (q, h),
                p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h),
                p + "self_attn.o_proj.weight": (h, q),
                p + "self_attn.q_norm.weight": (d,),
                p + "self_attn.k_norm.weight": (d,),
                p + "post_attention_layernorm.weight": (h,),
                p + "mlp.gate_proj.weight": (f, h),
                p + "mlp.up_proj.weight": (f, h),
                p + "mlp.down_proj.weight": (h, f),
            })
        shapes["model.norm.weight"] = (h,)
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (self.vocab_size, h)
        return shapes

    def num_params(self) -> int:
        return sum(math.prod(shape) for shape in self.hf_weight_shapes().values())


def _qwen3(layers: int, hidden: int, heads: int, ffn: int, tied: bool) -> Qwen3Config:
    return Qwen3Config(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                       num_key_value_heads=8, head_dim=128, intermediate_size=ffn, tie_word_embeddings=tied)


# The dense Qwen3 family (FACTS.md §3), so a recipe can be planned before its checkpoint exists.
QWEN3_SIZES: dict[str, Qwen3Config] = {
    "0.6b": _qwen3(28, 1024, 16, 3072, True),
    "1.7b": _qwen3(28, 2048, 16, 6144, True),
    "4b": _qwen3(36, 2560, 32, 9728, True),
    "8b": _qwen3(36, 4096, 32, 12288, False),
    "14b": _qwen3(40, 5120, 40, 17408, False),
    "32b": _qwen3(64, 5120, 64, 25600, False),
}
_SHAPE_FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                 "intermediate_size", "vocab_size", "tie_word_embeddings")


def qwen3_size(name: str) -> Qwen3Config:
    """The shape of a published Qwen3 size: "8b", "Qwen3-8B", "qwen3_0.6b"."""
    key = name.lower().removeprefix("qwen3-").removeprefix("qwen3_")
    if key not in QWEN3_SIZES:
        raise UserError(f"unknown Qwen3 size {name!r}; known: {', '.join(QWEN3_SIZES)}")
    return dataclasses.replace(QWEN3_SIZES[key])


def size_name(cfg: Qwen3Config) -> str | None:
    """The published size with exactly this shape, None for any other (a tiny test model, a fine-tune's)."""
    shape = [getattr(cfg, f) for f in _SHAPE_FIELDS]
    return next((n for n, c in QWEN3_SIZES.items() if [getattr(c, f) for f in _SHAPE_FIELDS] == shape), None)


def rope_kwargs(cfg: Qwen3Config) -> dict[str, Any]:
    """GPTModel keyword arguments for rotary embeddings, including YaRN for 64K runs."""
    scaling = cfg.rope_scaling or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind in (None, "default"):
        return dict(position_embedding_type="rope", rotary_base=int(cfg.rope_theta))
    if kind == "yarn":
        return dict(position_embedding_type="yarn", rotary_base=int(cfg.rope_theta))
    raise UserError(f"rope_scaling type {kind!r} is not supported (use yarn or none)")


def yarn_fields(cfg: Qwen3Config) -> dict[str, Any]:
    """HF's YaRN (transformers `_compute_yarn_parameters`) in megatron-core's terms.

    mscale=1, mscale_all_dim=0 give megatron's attention factor 0.1·ln(factor)+1, HF's default;
    rounding the correction range to integers matches HF's `truncate=True` default.
    """
    scaling = cfg.rope_scaling or {}
    if (scaling.get("rope_type") or scaling.get("type")) != "yarn":
        return {}
    return dict(
        yarn_rotary_scaling_factor=float(scaling["factor"]),
        yarn_original_max_position_embeddings=int(scaling.get("original_max_position_embeddings", 32768)),
        yarn_beta_fast=float(scaling.get("beta_fast", 32.0)),
        yarn_beta_slow=float(scaling.get("beta_slow", 1.0)),
        yarn_mscale=1.0,
        yarn_mscale_all_dim=0.0,
        yarn_correction_range_round_to_int=bool(scaling.get("truncate", True)),
    )
