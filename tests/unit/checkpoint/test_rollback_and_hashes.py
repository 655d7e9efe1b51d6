"""Pruning by step number, rollback that moves (never deletes), pointers always valid, content hashes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nemo_terminal.checkpoint import directory as cio
from nemo_terminal.checkpoint import integrity, save_load
from nemo_terminal.errors import UserError


def _fake_checkpoint(root: Path, step: int) -> Path:
    it = root / cio.iter_name(step)
    it.mkdir(parents=True)
    (it / "metadata.json").write_text('{"sharded_backend": "torch_dist"}')
    (it / "__0_0.distcp").write_bytes(os.urandom(1000 + step))
    return it


def test_prune_keeps_the_highest_steps(tmp_path):
    for step in (2, 4, 10, 12):
        _fake_checkpoint(tmp_path, step)
    cio.write_latest(tmp_path, "iter_0000012")
    save_load._prune(tmp_path, keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("iter_*")) == ["iter_0000010", "iter_0000012"]


def test_prune_never_deletes_what_latest_names(tmp_path):
    for step in (2, 4, 6):
        _fake_checkpoint(tmp_path, step)
    cio.write_latest(tmp_path, "iter_0000002")
    save_load._prune(tmp_path, keep_last=1)
    assert (tmp_path / "iter_0000002").is_dir() and (tmp_path / "iter_0000006").is_dir()


def test_roll_back_moves_newer_aside_and_moves_both_pointers(tmp_path):
    for step in (2, 4, 6):
        _fake_checkpoint(tmp_path, step)
    (tmp_path / "iter_0000008.tmp").mkdir()  # a killed save
    cio.write_latest(tmp_path, "iter_0000006")
    (tmp_path / cio.MEGATRON_LM_TRACKER).write_text("6\n")
    cio.write_latest(tmp_path, "iter_0000006")
    dest = save_load.roll_back(tmp_path, tmp_path / "iter_0000002")
    assert dest is not None and dest.parent == tmp_path / "rolled_back"
    assert sorted(p.name for p in dest.iterdir()) == ["iter_0000004", "iter_0000006", "iter_0000008.tmp"]
    assert (tmp_path / "latest").read_text().strip() == "iter_0000002"
    assert (tmp_path / cio.MEGATRON_LM_TRACKER).read_text().strip() == "2"
    assert save_load.roll_back(tmp_path, tmp_path / "iter_0000002") is None  # nothing newer: nothing moves


def test_hash_record_detects_a_flipped_bit_and_a_missing_file(tmp_path):
    it = _fake_checkpoint(tmp_path, 3)
    integrity.record_hashes(it)
    assert integrity.hash_problems(it) == []
    data = bytearray((it / "__0_0.distcp").read_bytes())
    data[500] ^= 0x01
    (it / "__0_0.distcp").write_bytes(bytes(data))
    assert integrity.hash_problems(it) == ["__0_0.distcp differs from its content hash at save (corrupted)"]
    split = [integrity.hash_problems(it, r, 2) for r in (0, 1)]  # two ranks split the files
    assert sorted(p for share in split for p in share) == integrity.hash_problems(it)


def test_hashing_speed_is_reported(tmp_path, capsys):
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(64 * 2**20))
    t = time.perf_counter()
    integrity.hash_file(path)
    rate = path.stat().st_size / (time.perf_counter() - t) / 1e9
    print(f"xxh3_128: {rate:.2f} GB/s")
    assert rate > 0.3  # far below the measured 8 GB/s; catches an accidental slow fallback


def test_writer_children_die_with_a_sigkilled_parent(tmp_path):
    """What make_writers_die_with_trainer relies on: a forked child with the parent-death
    signal set is gone right after its parent is SIGKILLed (without it, it would sleep on)."""
    code = (
        "import os, time\n"
        "from nemo_terminal.checkpoint.writer_processes import die_with_parent\n"
        "me = os.getpid()\n"
        "os.register_at_fork(after_in_child=lambda: die_with_parent(me))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(60); os._exit(0)\n"
        "print(pid, flush=True); time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), f"child {child} outlived its SIGKILLed parent"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("name", ["RANK", "MASTER_PORT", "SLURM_PROCID", "TORCHELASTIC_RUN_ID", "LOCAL_RANK"])
def test_import_child_environment_has_no_rank_variables(monkeypatch, name):
    from nemo_terminal.runtime.launch import single_process_env

    monkeypatch.setenv(name, "1")
    monkeypatch.setenv("KEEP_ME", "x")
    env = single_process_env()
    assert name not in env and env["KEEP_ME"] == "x"


def test_checkpoint_without_hashes_loads_with_one_line(tmp_path, capsys):
    import pickle

    import torch
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import (
        ChunkStorageMetadata,
        Metadata,
        MetadataIndex,
        TensorProperties,
        TensorStorageMetadata,
    )

    from nemo_terminal.checkpoint.preload import check_before_load

    it = tmp_path / "iter_0000001"
    it.mkdir()
    (it / "metadata.json").write_text('{"sharded_backend": "torch_dist"}')
    (it / "__0_0.distcp").write_bytes(bytes(16))
    chunk = ChunkStorageMetadata(torch.Size([0]), torch.Size([4]))
    md = Metadata({"w": TensorStorageMetadata(TensorProperties(dtype=torch.float32), torch.Size([4]), [chunk])})
    md.storage_data = {MetadataIndex("w", torch.Size([0])): _StorageInfo("__0_0.distcp", 0, 16)}
    (it / ".metadata").write_bytes(pickle.dumps(md))
    check_before_load(it)
    assert capsys.readouterr().out.count("integrity cannot be checked") == 1
    integrity.record_hashes(it)
    check_before_load(it)
    assert "integrity" not in capsys.readouterr().out
    (it / "__0_0.distcp").write_bytes(bytes(8))  # truncated: refused even without hashing
    with pytest.raises(UserError, match="__0_0.distcp is truncated"):
        check_before_load(it, verify_hashes=False)
