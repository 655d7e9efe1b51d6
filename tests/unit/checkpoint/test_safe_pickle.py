"""The restricted unpickler refuses code-running pickles in every checkpoint file it guards, and
accepts the classes real checkpoints hold (the integration tests load real ones through it)."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest
import torch

from nemo_terminal.checkpoint import safe_pickle
from nemo_terminal.errors import UserError


class Payload:
    """Unpickling this runs `touch <marker>`: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _dcp_metadata(extra=None):
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import (
        ChunkStorageMetadata,
        Metadata,
        MetadataIndex,
        TensorProperties,
        TensorStorageMetadata,
    )

    tensor = TensorStorageMetadata(TensorProperties(dtype=torch.bfloat16), torch.Size([4, 2]),
                                   [ChunkStorageMetadata(torch.Size([0, 0]), torch.Size([4, 2]))])
    md = Metadata(state_dict_metadata={"w": tensor}, planner_data=extra)
    md.storage_data = {MetadataIndex("w", torch.Size([0, 0])): _StorageInfo("__0_0.distcp", 0, 16)}
    return md


def test_real_metadata_classes_load(tmp_path):
    path = tmp_path / ".metadata"
    path.write_bytes(pickle.dumps(_dcp_metadata({"w": (Path("x"), torch.float32)})))
    md = safe_pickle.load_pickle(path)
    assert md.state_dict_metadata["w"].size == torch.Size([4, 2])
    assert md.planner_data["w"][1] is torch.float32


def test_reduce_payload_in_metadata_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / ".metadata"
    path.write_bytes(pickle.dumps(_dcp_metadata(Payload(marker))))
    with pytest.raises(safe_pickle.UnsafeCheckpoint, match=r"\.metadata.*names posix\.system"):
        safe_pickle.load_pickle(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the control: plain pickle (what torch DCP does) runs it
    assert marker.exists()


def test_reduce_payload_in_torch_file_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "common.pt"
    torch.save({"iteration": 3, "x": Payload(marker)}, path)
    with pytest.raises(safe_pickle.UnsafeCheckpoint, match=r"common\.pt.*posix\.system"):
        safe_pickle.torch_load(path)
    assert not marker.exists()
    buf = io.BytesIO()
    torch.save([None, io.BytesIO(b"te extra state")], buf)  # what megatron's ShardedObjects hold
    buf.seek(0)
    assert safe_pickle.torch_load(path, buf)[1].getvalue() == b"te extra state"


def test_truncated_metadata_is_a_user_error(tmp_path):
    path = tmp_path / ".metadata"
    path.write_bytes(pickle.dumps(_dcp_metadata())[:40])
    with pytest.raises(UserError, match="truncated or corrupt"):
        safe_pickle.load_pickle(path)


def test_allow_list_is_one_place_and_resolvable():
    missing = [d for d in safe_pickle.ALLOWED_GLOBALS if not safe_pickle._importable(d)]
    assert missing == []
    assert "argparse.Namespace" in safe_pickle.ALLOWED_GLOBALS  # Megatron-LM's saved args
