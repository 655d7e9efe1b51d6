"""The Megatron checkpoint directory contract, shared by import, train and export.

    MEG/model_config.json   Qwen3Config.to_hf_dict()
    MEG/tokenizer/          the HF tokenizer files
    MEG/latest              name of the newest complete iter_XXXXXXX (written last, atomically)
    MEG/iter_XXXXXXX/       dist_checkpointing (torch_dist) save of {"model": GPTModel.sharded_state_dict()}
    MEG/release/            instead of iter_XXXXXXX in an imported checkpoint (Megatron-LM's and
                            Megatron-Bridge's convention for weights to fine-tune from)
    MEG/latest_checkpointed_iteration.txt   Megatron-LM's tracker ("release" or the step), kept with
                            `latest`; iteration dirs also carry Megatron-LM `args` in common.pt and
                            Bridge's run_config.yaml (checkpoint/megatron_lm.py)
    MEG/training_data.json  training runs only: the datasets and the thinking policy they were prepared
                            with (export writes the chat template that renders prompts the same way)

Checkpoint keys are `ShardedTensor.key`s, identical at every TP/PP and for
the local and TE layer specs, so any layout loads any checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from nemo_terminal.errors import UserError
from nemo_terminal.models.qwen3 import Qwen3Config
from nemo_terminal.models.tokenizer import TOKENIZER_FILES, check_tokenizer_dir

MODEL_CONFIG = "model_config.json"
TOKENIZER_DIR = "tokenizer"
LATEST = "latest"
MEGATRON_LM_TRACKER = "latest_checkpointed_iteration.txt"
ITER_RE = re.compile(r"^iter_\d{7}$")
RELEASE = "release"


def iter_name(step: int) -> str:
    return f"iter_{step:07d}"


def write_latest(meg_dir: str | Path, name: str) -> None:
    """Point `latest` at a complete checkpoint subdir; atomic, so readers never see half a name.

    Megatron-LM's tracker file (which Megatron-Bridge also reads) is moved first to the same
    iteration, so both pointers always name a complete checkpoint."""
    meg_dir = Path(meg_dir)
    assert ITER_RE.match(name) or name == RELEASE, name
    assert (meg_dir / name / "metadata.json").is_file(), f"{meg_dir / name} is not a complete checkpoint"
    pointers = [(MEGATRON_LM_TRACKER, RELEASE if name == RELEASE else str(int(name[len("iter_"):])))]
    for pointer, text in [*pointers, (LATEST, name)]:
        tmp = meg_dir / f".{pointer}.tmp.{os.getpid()}"
        tmp.write_text(text + "\n")
        os.replace(tmp, meg_dir / pointer)


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
    if not (ITER_RE.match(name) or name == RELEASE) or not (it / "metadata.json").is_file() \
            or not (it / ".metadata").is_file():
        raise UserError(f"{pointer} names {name!r}, which is not a complete checkpoint under {meg_dir}")
    return it


def read_model_config(meg_dir: str | Path) -> Qwen3Config:
    return Qwen3Config.from_json_file(
        Path(meg_dir) / MODEL_CONFIG, f": {meg_dir} is not a nemo_terminal Megatron checkpoint directory"
    )


def write_model_config(meg_dir: str | Path, cfg: Qwen3Config) -> None:
    (Path(meg_dir) / MODEL_CONFIG).write_text(json.dumps(cfg.to_hf_dict(), indent=2) + "\n")


TRAINING_DATA = "training_data.json"


def write_training_data(meg_dir: str | Path, thinking: str | None, datasets: Sequence[str]) -> None:
    """Record what a training run read: its datasets and their thinking policy."""
    record = {"thinking": thinking, "datasets": [str(d) for d in datasets]}
    (Path(meg_dir) / TRAINING_DATA).write_text(json.dumps(record, indent=2) + "\n")


def trained_thinking(meg_dir: str | Path) -> tuple[bool, str | None]:
    """(trained here, thinking policy): (False, None) for an imported checkpoint; (True, None)
    for a run on data prepared before the policy was recorded."""
    path = Path(meg_dir) / TRAINING_DATA
    if not path.is_file():
        return False, None
    try:
        return True, json.loads(path.read_text()).get("thinking")
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON ({err}); delete it and pass --thinking") from None


def tokenizer_dir(meg_dir: str | Path) -> Path:
    return check_tokenizer_dir(Path(meg_dir) / TOKENIZER_DIR)


def copy_tokenizer(src_dir: str | Path, dst_dir: str | Path) -> None:
    """Copy the tokenizer files that exist in `src_dir` (at least tokenizer.json + config)."""
    src = check_tokenizer_dir(src_dir)
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    extra = ("vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja")
    for name in (*TOKENIZER_FILES, *extra):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
