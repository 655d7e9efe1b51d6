"""The Megatron checkpoint directory contract, shared by import, train and export.

    MEG/model_config.json   Qwen3Config.to_hf_dict()
    MEG/tokenizer/          the HF tokenizer files
    MEG/latest              name of the newest complete iter_XXXXXXX (written last, atomically)
    MEG/iter_XXXXXXX/       dist_checkpointing (torch_dist) save of {"model": GPTModel.sharded_state_dict()}

Checkpoint keys are `ShardedTensor.key`s, identical at every TP/PP and for
the local and TE layer specs, so any layout loads any checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Sequence

from nemo_terminal.errors import UserError
from nemo_terminal.models.qwen3 import Qwen3Config

MODEL_CONFIG = "model_config.json"
TOKENIZER_DIR = "tokenizer"
LATEST = "latest"
ITER_RE = re.compile(r"^iter_\d{7}$")


def iter_name(step: int) -> str:
    return f"iter_{step:07d}"


def write_latest(meg_dir: str | Path, name: str) -> None:
    """Point `latest` at a complete checkpoint subdir; atomic, so readers never see half a name."""
    meg_dir = Path(meg_dir)
    assert ITER_RE.match(name), name
    assert (meg_dir / name / "metadata.json").is_file(), f"{meg_dir / name} is not a complete checkpoint"
    tmp = meg_dir / f".{LATEST}.tmp.{os.getpid()}"
    tmp.write_text(name + "\n")
    os.replace(tmp, meg_dir / LATEST)


def resolve_checkpoint(meg_dir: str | Path) -> Path:
    """The iter dir `latest` points to; a UserError naming the directory if there is none."""
    meg_dir = Path(meg_dir)
    pointer = meg_dir / LATEST
    if not pointer.is_file():
        raise UserError(
            f"{meg_dir} has no '{LATEST}' file: not a nemo_terminal Megatron checkpoint directory "
            "(make one with `nemo-terminal import`), or its first save never completed"
        )
    name = pointer.read_text().strip()
    it = meg_dir / name
    if not ITER_RE.match(name) or not (it / "metadata.json").is_file() or not (it / ".metadata").is_file():
        raise UserError(f"{pointer} names {name!r}, which is not a complete checkpoint under {meg_dir}")
    return it


def read_model_config(meg_dir: str | Path) -> Qwen3Config:
    return Qwen3Config.from_json_file(
        Path(meg_dir) / MODEL_CONFIG, f": {meg_dir} is not a nemo_terminal Megatron checkpoint directory"
    )


def write_model_config(meg_dir: str | Path, cfg: Qwen3Config) -> None:
    (Path(meg_dir) / MODEL_CONFIG).write_text(json.dumps(cfg.to_hf_dict(), indent=2) + "\n")


def tokenizer_dir(meg_dir: str | Path) -> Path:
    from nemo_terminal.models.tokenizer import check_tokenizer_dir

    return check_tokenizer_dir(Path(meg_dir) / TOKENIZER_DIR)


def copy_tokenizer(src_dir: str | Path, dst_dir: str | Path) -> None:
    """Copy the tokenizer files that exist in `src_dir` (at least tokenizer.json + config)."""
    from nemo_terminal.models.tokenizer import TOKENIZER_FILES, check_tokenizer_dir

    src = check_tokenizer_dir(src_dir)
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    extra = ("vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja")
    for name in (*TOKENIZER_FILES, *extra):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


def load_model_weights(model_chunks: Sequence, iter_dir: str | Path) -> None:
    """Load the "model" entry of a checkpoint into GPTModel chunks built at any TP/PP/VPP.

    Every rank calls this (it is collective). Optimizer and other entries are ignored.
    """
    from megatron.core import dist_checkpointing

    iter_dir = Path(iter_dir)
    if not (iter_dir / "metadata.json").is_file():
        raise UserError(f"{iter_dir} is not a complete dist checkpoint (no metadata.json)")
    for chunk in model_chunks:
        loaded = dist_checkpointing.load({"model": chunk.sharded_state_dict()}, str(iter_dir))
        chunk.load_state_dict(loaded["model"], strict=True)


def meta_sharded_state_dict(cfg: Qwen3Config, dtype=None) -> dict:
    """The "model" sharded state dict a TP=1/PP=1 GPTModel of `cfg` would save, on the meta device.

    Needs megatron parallel state at TP=1/PP=1. Factories (fc1's gate/up split) are applied, so
    values are ShardedTensors (data on meta, in `dtype`) and ShardedObjects (_extra_state).
    """
    import torch
    from megatron.core.dist_checkpointing.state_dict_utils import save_preprocess

    from nemo_terminal.models.provider import build_gpt_model
    from nemo_terminal.models.qwen3 import to_transformer_config

    with torch.device("meta"):
        model = build_gpt_model(cfg, to_transformer_config(cfg), attention_backend="local")
    sharded = {"model": model.sharded_state_dict()}
    sharded, _common = save_preprocess(sharded, validate_access_integrity=False)
    if dtype is not None:
        from megatron.core.dist_checkpointing import ShardedTensor
        from megatron.core.dist_checkpointing.dict_utils import nested_values

        for sh in nested_values(sharded):
            if isinstance(sh, ShardedTensor):
                sh.data = torch.empty(sh.data.shape, dtype=dtype, device="meta")
    return sharded
