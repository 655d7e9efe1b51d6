"""The one restricted unpickler: checkpoint files may name only allow-listed classes.

A torch_dist checkpoint holds three kinds of pickles, and torch or megatron would
unpickle two of them with no restriction, so a crafted checkpoint could run code:

- `.metadata`: torch.distributed.checkpoint reads it with plain `pickle.load`;
- object shards: the `BytesStorageMetadata` entries inside `*.distcp` files (megatron's
  ShardedObjects, e.g. `_extra_state`), which DCP's planner loads with `weights_only=False`;
- `common.pt`: megatron's non-sharded state (`torch.load`, weights-only by default in torch
  >= 2.6 unless `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` is set).

`check_checkpoint_pickles` reads all three through this module before anything else loads
the checkpoint. `.metadata` goes through `RestrictedUnpickler`; the others through
`torch.load(weights_only=True)` with only `ALLOWED_GLOBALS` added to torch's own list.
Extend `ALLOWED_GLOBALS` (one place) when a legitimate checkpoint needs another class.
"""

from __future__ import annotations

import importlib
import io
import pickle
import re
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

from nemo_terminal.errors import UserError

ALLOWED_GLOBALS: tuple[str, ...] = (
    # torch.distributed.checkpoint metadata (`.metadata`)
    "torch.distributed.checkpoint.metadata.Metadata",
    "torch.distributed.checkpoint.metadata.TensorStorageMetadata",
    "torch.distributed.checkpoint.metadata.BytesStorageMetadata",
    "torch.distributed.checkpoint.metadata.ChunkStorageMetadata",
    "torch.distributed.checkpoint.metadata.TensorProperties",
    "torch.distributed.checkpoint.metadata.MetadataIndex",
    "torch.distributed.checkpoint.metadata.StorageMeta",
    "torch.distributed.checkpoint.metadata._MEM_FORMAT_ENCODING",
    "torch.distributed.checkpoint.filesystem._StorageInfo",
    # megatron's cached save plan (Metadata.planner_data / mcore_data) in `.metadata`
    "torch.distributed.checkpoint.planner.SavePlan",
    "torch.distributed.checkpoint.planner.WriteItem",
    "torch.distributed.checkpoint.planner.WriteItemType",
    "torch.distributed.checkpoint.planner.TensorWriteData",
    "torch.serialization._get_layout",
    "torch.Size",
    "pathlib.PosixPath",
    "pathlib.PurePosixPath",
    "collections.OrderedDict",
    "copyreg._reconstructor",
    "builtins.object",
    "builtins.set",
    "builtins.frozenset",
    "builtins.slice",
    "io.BytesIO",  # Transformer Engine's _extra_state in older TE versions
    # Megatron-LM's saved `args` (checkpoint/megatron_lm.py)
    "argparse.Namespace",
    "megatron.core.enums.ModelType",
    "megatron.core.transformer.enums.AttnBackend",
    "megatron.core.transformer.enums.AttnMaskType",
)
"""Classes and functions a checkpoint pickle may name, besides torch dtypes (and, for
`torch.load`, torch's own weights-only list: tensors, storages, containers)."""

_GLOBAL_IN_ERROR = re.compile(r"GLOBAL ([\w.]+)")  # how torch's weights-only unpickler names a refused global


def _resolve(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _is_allowed(module: str, name: str) -> bool:
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return True
    return f"{module}.{name}" in ALLOWED_GLOBALS


class RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, dotted: str):
        super().__init__(dotted)
        self.dotted = dotted


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only `ALLOWED_GLOBALS` (and torch dtypes)."""

    def find_class(self, module: str, name: str) -> Any:
        if not _is_allowed(module, name):
            raise RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


class UnsafeCheckpoint(UserError):
    """A checkpoint pickle names a global outside the allow-list."""


def _refusal(path: Path, what: str, dotted: str) -> UserError:
    return UnsafeCheckpoint(
        f"{path}: refused to load {what}: it names {dotted}, which is not in the allow-list of "
        "nemo_terminal/checkpoint/safe_pickle.py (a checkpoint pickle can run code this way). "
        "Load checkpoints only from sources you trust; if this class is legitimate, add it to ALLOWED_GLOBALS"
    )


def load_pickle(path: Path, f: BinaryIO | None = None, what: str = "the pickle") -> Any:
    """A plain pickle (e.g. DCP's `.metadata`) through `RestrictedUnpickler`."""
    try:
        if f is None:
            with open(path, "rb") as fh:
                return RestrictedUnpickler(fh).load()
        return RestrictedUnpickler(f).load()
    except RefusedGlobal as err:
        raise _refusal(path, what, err.dotted) from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as err:
        raise UserError(f"{path}: cannot read {what} (truncated or corrupt?): {err}") from None


def allowed_globals():
    """Context: torch's weights-only loads (megatron's common.pt load included) also accept
    `ALLOWED_GLOBALS`, the same list the checks above use."""
    return torch.serialization.safe_globals([_resolve(d) for d in ALLOWED_GLOBALS if _importable(d)])


def torch_load(path: Path, f: BinaryIO | None = None, what: str = "the file") -> Any:
    """`torch.load(weights_only=True)` with `ALLOWED_GLOBALS` added; a UserError naming a refused global."""
    try:
        with allowed_globals():
            return torch.load(f if f is not None else path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        match = _GLOBAL_IN_ERROR.search(str(err))
        if match:
            raise _refusal(path, what, match.group(1)) from None
        raise UserError(f"{path}: cannot read {what} (truncated or corrupt?): {str(err).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read {what} (truncated or corrupt?): {str(err).splitlines()[0]}") from None


def _importable(dotted: str) -> bool:
    try:
        _resolve(dotted)
        return True
    except (ImportError, AttributeError):
        return False


def read_dcp_metadata(iter_dir: str | Path):
    """The DCP `Metadata` of a checkpoint directory, read through the restricted unpickler."""
    path = Path(iter_dir) / ".metadata"
    if not path.is_file():
        raise UserError(f"{path} is missing: {iter_dir} is not a complete torch_dist checkpoint")
    return load_pickle(path, what="the distributed-checkpoint metadata")


def check_object_shards(iter_dir: str | Path, metadata=None) -> int:
    """Unpickle every object shard (BytesStorageMetadata entry) of the checkpoint through
    `torch_load`; return how many were checked. Raises a UserError naming file and key."""
    iter_dir = Path(iter_dir)
    md = metadata if metadata is not None else read_dcp_metadata(iter_dir)
    checked = 0
    for key, item in md.state_dict_metadata.items():
        if not isinstance(item, BytesStorageMetadata):
            continue
        info = md.storage_data.get(MetadataIndex(key))
        if info is None:
            raise UserError(f"{iter_dir}/.metadata lists object {key} but not where it is stored")
        path = iter_dir / info.relative_path
        try:
            with open(path, "rb") as f:
                f.seek(info.offset)
                blob = f.read(info.length)
        except OSError as err:
            raise UserError(f"{path}: cannot read object {key}: {err}") from None
        if len(blob) != info.length:
            raise UserError(f"{path}: object {key} is truncated ({len(blob)} of {info.length} bytes)")
        torch_load(path, io.BytesIO(blob), what=f"object {key}")
        checked += 1
    return checked


def check_checkpoint_pickles(iter_dir: str | Path) -> None:
    """Every pickle a load of `iter_dir` would unpickle, checked: `.metadata`, each object
    shard in the `*.distcp` files and `common.pt`. Raises a UserError on the first refusal."""
    iter_dir = Path(iter_dir)
    md = read_dcp_metadata(iter_dir)
    check_object_shards(iter_dir, md)
    common = iter_dir / "common.pt"
    if common.is_file():
        torch_load(common, what="megatron's common state")
