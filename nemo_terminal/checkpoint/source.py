"""Any Qwen3 GPTModel torch_dist checkpoint directory, as export, verify and train read it.

Three layouts are accepted (docs/conversion.md):

- ours: `model_config.json`, `tokenizer/`, `latest` -> `iter_XXXXXXX/` or `release/` (older
  versions wrote `iter_0000000` for an import; still read);
- Megatron-LM: `latest_checkpointed_iteration.txt` -> `iter_XXXXXXX/` or `release/`; the model
  shape from the `args` saved in common.pt; no tokenizer inside (give `--tokenizer`);
- Megatron-Bridge: the same tracker (or `latest_train_state.pt`), the model shape from
  `<iteration>/run_config.yaml`, the tokenizer in `<iteration>/tokenizer/` when it was saved.

A directory that is itself an iteration (`.../iter_0000100`) is accepted too, as Bridge does.
The vocabulary size and stored dtype come from the checkpoint's own embedding tensor.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_terminal.checkpoint import directory as cio
from nemo_terminal.checkpoint import megatron_lm
from nemo_terminal.checkpoint.safe_pickle import read_dcp_metadata, torch_load
from nemo_terminal.errors import UserError
from nemo_terminal.models.qwen3 import Qwen3Config
from nemo_terminal.models.tokenizer import check_tokenizer_dir

BRIDGE_TRAIN_STATE = "latest_train_state.pt"
EMBEDDING = "embedding.word_embeddings.weight"
OUTPUT_LAYER = "output_layer.weight"


@dataclass
class CheckpointSource:
    """One checkpoint to read weights from: where, what shape, which tokenizer."""

    root: Path
    iter_dir: Path
    cfg: Qwen3Config
    tokenizer: Path | None
    """The HF tokenizer directory, or None when the checkpoint has none and none was given."""
    layout: str
    """nemo_terminal | megatron-lm | megatron-bridge"""

    def require_tokenizer(self, flag: str = "--tokenizer") -> Path:
        if self.tokenizer is None:
            raise UserError(f"{self.root} is a {self.layout} checkpoint without a tokenizer; pass {flag} "
                            "with the Hugging Face tokenizer directory of the model")
        return self.tokenizer


def open_checkpoint(meg_dir: str | Path, tokenizer: str | Path | None = None) -> CheckpointSource:
    root = Path(meg_dir)
    if not root.is_dir():
        raise UserError(f"checkpoint directory {root} does not exist")
    explicit = _tokenizer_dir(Path(tokenizer)) if tokenizer is not None else None
    if (root / cio.MODEL_CONFIG).is_file():
        tok = explicit or (cio.tokenizer_dir(root) if (root / cio.TOKENIZER_DIR).is_dir() else None)
        return CheckpointSource(root, cio.resolve_checkpoint(root), cio.read_model_config(root), tok, "nemo_terminal")
    iter_dir = _iteration_dir(root)
    run_cfg = iter_dir / megatron_lm.RUN_CONFIG
    if run_cfg.is_file():
        cfg, layout = config_from_run_config(megatron_lm.read_run_config(run_cfg), str(run_cfg)), "megatron-bridge"
    else:
        args = megatron_lm.read_saved_args(iter_dir)
        if args is None:
            raise UserError(f"{iter_dir} has neither {megatron_lm.RUN_CONFIG} (Megatron-Bridge) nor saved args in "
                            f"common.pt (Megatron-LM), and {root} has no {cio.MODEL_CONFIG}: the model shape is "
                            "unknown")
        cfg, layout = config_from_args(args, f"{iter_dir / 'common.pt'} args"), "megatron-lm"
    _shape_from_tensors(cfg, iter_dir)
    if explicit is None:
        found = [d for d in (iter_dir / cio.TOKENIZER_DIR, root / cio.TOKENIZER_DIR) if d.is_dir()]
        explicit = _tokenizer_dir(found[0]) if found else None
    return CheckpointSource(root, iter_dir, cfg, explicit, layout)


def _tokenizer_dir(path: Path) -> Path:
    return check_tokenizer_dir(path)


def _iteration_dir(root: Path) -> Path:
    """The iteration the tracker names (Megatron-LM's text file, else Bridge's train state)."""
    if (root / "metadata.json").is_file():
        return root  # already an iteration directory
    tracker = root / cio.MEGATRON_LM_TRACKER
    if tracker.is_file():
        text = tracker.read_text().strip()
        name = cio.RELEASE if text == cio.RELEASE else (cio.iter_name(int(text)) if text.isdigit() else None)
        if name is None:
            raise UserError(f"{tracker} holds {text!r}; expected an iteration number or 'release'")
    elif (root / BRIDGE_TRAIN_STATE).is_file():
        state = torch_load(root / BRIDGE_TRAIN_STATE, what="Megatron-Bridge's train state")
        name = cio.iter_name(int(state["step"]))
    else:
        raise UserError(f"{root} is not a checkpoint directory: no {cio.MODEL_CONFIG} + {cio.LATEST} (nemo_terminal), "
                        f"no {cio.MEGATRON_LM_TRACKER} (Megatron-LM, Megatron-Bridge), no metadata.json")
    it = root / name
    if not (it / "metadata.json").is_file() or not (it / ".metadata").is_file():
        raise UserError(f"the tracker in {root} names {name}, which is not a complete torch_dist checkpoint")
    return it


def _shape_from_tensors(cfg: Qwen3Config, iter_dir: Path) -> None:
    """Vocabulary size and stored dtype from the checkpoint's embedding (padded vocabularies included)."""
    tensors = read_dcp_metadata(iter_dir).state_dict_metadata
    meta = tensors.get(EMBEDDING)
    if meta is None or not hasattr(meta, "size"):
        raise UserError(f"{iter_dir} has no {EMBEDDING}: not a GPTModel checkpoint")
    untied = OUTPUT_LAYER in tensors
    if untied == cfg.tie_word_embeddings:
        raise UserError(f"{iter_dir}: the saved config says tie_word_embeddings={cfg.tie_word_embeddings}, but the "
                        f"checkpoint {'has' if untied else 'lacks'} {OUTPUT_LAYER}; the metadata is not from "
                        "these weights")
    cfg.vocab_size = int(meta.size[0])
    cfg.torch_dtype = str(meta.properties.dtype).removeprefix("torch.")  # config.json's names: bfloat16, ...


def _refuse_unless(source: str, checks: dict[str, tuple[Any, Any]]) -> None:
    for name, (value, want) in checks.items():
        if value is not None and value != want:
            raise UserError(f"{source}: {name}={value!r} is not a dense Qwen3 ({name}={want!r} expected)")


def _rope_scaling(fields: dict[str, Any], source: str, prefix: str) -> dict[str, Any] | None:
    """Megatron's rope settings (the same names in saved args and in Bridge's model section) -> HF
    `rope_scaling`; `prefix` is how the error names the field."""
    kind = fields.get("position_embedding_type", "rope")
    if kind == "rope":
        return None
    if kind != "yarn":
        raise UserError(f"{source}: {prefix}position_embedding_type={kind!r} is not supported (rope or yarn)")
    return {"rope_type": "yarn", "factor": float(fields["yarn_rotary_scaling_factor"]),
            "original_max_position_embeddings": int(fields["yarn_original_max_position_embeddings"])}


def config_from_args(args: argparse.Namespace, source: str) -> Qwen3Config:
    """Megatron-LM's saved args -> Qwen3Config; anything that is not Qwen3 is refused, naming the arg."""
    a = vars(args)
    _refuse_unless(source, {
        "normalization": (a.get("normalization"), "RMSNorm"), "swiglu": (a.get("swiglu"), True),
        "add_bias_linear": (a.get("add_bias_linear"), False), "add_qkv_bias": (a.get("add_qkv_bias"), False),
        "qk_layernorm": (a.get("qk_layernorm"), True), "num_experts": (a.get("num_experts") or None, None),
        "rotary_percent": (a.get("rotary_percent"), 1.0), "rotary_interleaved": (a.get("rotary_interleaved"), False),
        "apply_layernorm_1p": (a.get("apply_layernorm_1p"), False),
        "multi_latent_attention": (a.get("multi_latent_attention"), False),
    })
    scaling = _rope_scaling(a, source, "")
    heads = int(a["num_attention_heads"])
    return Qwen3Config(
        num_hidden_layers=int(a["num_layers"]), hidden_size=int(a["hidden_size"]), num_attention_heads=heads,
        num_key_value_heads=int(a.get("num_query_groups") or heads) if a.get("group_query_attention") else heads,
        head_dim=int(a.get("kv_channels") or int(a["hidden_size"]) // heads),
        intermediate_size=int(a["ffn_hidden_size"]),
        tie_word_embeddings=not a.get("untie_embeddings_and_output_weights", False),
        rms_norm_eps=float(a.get("norm_epsilon", 1e-6)), rope_theta=float(a.get("rotary_base", 10000)),
        max_position_embeddings=int(a.get("max_position_embeddings") or a.get("seq_length") or 40960),
        rope_scaling=scaling,
    )


def config_from_run_config(run_cfg: dict[str, Any], source: str) -> Qwen3Config:
    """Bridge's run_config.yaml `model` section -> Qwen3Config; `_target_` values are compared as
    text only (never imported)."""
    m = run_cfg["model"]
    act = m.get("activation_func")
    act = act.get("_target_") if isinstance(act, dict) else act
    _refuse_unless(source, {
        "model.normalization": (m.get("normalization"), "RMSNorm"),
        "model.gated_linear_unit": (m.get("gated_linear_unit"), True),
        "model.add_bias_linear": (m.get("add_bias_linear"), False),
        "model.add_qkv_bias": (m.get("add_qkv_bias"), False),
        "model.qk_layernorm": (m.get("qk_layernorm"), True),
        "model.num_moe_experts": (m.get("num_moe_experts") or None, None),
        "model.rotary_percent": (m.get("rotary_percent"), 1.0),
        "model.activation_func": (act, "torch.nn.functional.silu"),
        "model.multi_latent_attention": (m.get("multi_latent_attention"), False),
    })
    scaling = _rope_scaling(m, source, "model.")
    missing = [k for k in ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size") if m.get(k) is None]
    if missing:
        raise UserError(f"{source}: model section lacks {missing}")
    heads = int(m["num_attention_heads"])
    return Qwen3Config(
        num_hidden_layers=int(m["num_layers"]), hidden_size=int(m["hidden_size"]), num_attention_heads=heads,
        num_key_value_heads=int(m.get("num_query_groups") or heads),
        head_dim=int(m.get("kv_channels") or int(m["hidden_size"]) // heads),
        intermediate_size=int(m["ffn_hidden_size"]),
        tie_word_embeddings=bool(m.get("share_embeddings_and_output_weights", True)),
        rms_norm_eps=float(m.get("layernorm_epsilon", 1e-6)), rope_theta=float(m.get("rotary_base", 10000)),
        max_position_embeddings=int(m.get("max_position_embeddings") or m.get("seq_length") or 40960),
        rope_scaling=scaling,
    )
