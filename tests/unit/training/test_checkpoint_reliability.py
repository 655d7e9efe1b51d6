"""Issue 14's checkpoint defects, each reproduced with the real CLI: rollback, resume rules,
corrupt and hostile checkpoints, preemption exit code, writer processes, the on-the-fly import."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from _runs import base_overrides

from nemo_terminal.checkpoint import integrity
from nemo_terminal.errors import UserError

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "configs" / "tiny_cpu.yaml"
FAST = {"train.global_batch_size": 2, "checkpoint.resume": "auto"}


def _overrides(inputs: dict, run: Path, extra: dict) -> list[str]:
    return base_overrides(inputs, run, **{**FAST, **extra})


def _train(overrides: list[str], timeout: float = 300, torchrun: bool = False) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"] if torchrun else []
    cmd = [sys.executable, *launcher, "-m", "nemo_terminal", "train", "--config", str(RECIPE), *overrides]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"train hung for {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _rows(run: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run / name).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def two_checkpoints(train_inputs, tmp_path_factory) -> Path:
    """A run of 4 steps with checkpoints at steps 2 and 4."""
    run = tmp_path_factory.mktemp("two_ckpt") / "run"
    done = _train(_overrides(train_inputs, run, {"train.max_steps": 4, "checkpoint.save_interval": 2,
                                                                "checkpoint.keep_last": 3}))
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_rollback_replans_lr_and_keeps_latest_valid(train_inputs, two_checkpoints, tmp_path):
    run = _copy(two_checkpoints, tmp_path)
    first = _rows(run)
    done = _train(_overrides(train_inputs, run, {
        "checkpoint.resume": run / "iter_0000002", "train.max_steps": 5, "checkpoint.save_interval": 1,
        "checkpoint.keep_last": 1}))
    assert done.returncode == 0, done.stderr[-3000:]
    latest = (run / "latest").read_text().strip()
    assert latest == "iter_0000005" and (run / latest / "metadata.json").is_file()
    assert sorted(p.name for p in run.glob("iter_*")) == ["iter_0000005"]
    moved = list((run / "rolled_back").glob("*/iter_0000004"))
    assert len(moved) == 1 and (moved[0] / "metadata.json").is_file()  # moved aside, never deleted
    rows = _rows(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]  # one row per step
    assert [r["step"] for r in _rows(run, "metrics.superseded.jsonl")] == [3, 4]
    # LR continuous at the resume step, then a cosine from there to min_lr at the new last step (5).
    lr_s, min_lr = first[2]["lr"], 1e-5
    assert rows[2]["lr"] == pytest.approx(lr_s, rel=1e-12)
    for row in rows[2:]:
        k = row["step"] - 1 - 2
        assert row["lr"] == pytest.approx(min_lr + (lr_s - min_lr) * 0.5 * (1 + math.cos(math.pi * k / 3)), rel=1e-9)

    refused = _train(_overrides(train_inputs, run, {"train.max_steps": 6, "train.lr": 5e-4}))
    assert refused.returncode != 0
    assert "train.lr was 0.001" in refused.stderr and f"model.megatron_dir={run}" in refused.stderr
    assert (run / "latest").read_text().strip() == "iter_0000005"


def test_corrupt_or_missing_checkpoint_names_the_older_complete_one(train_inputs, two_checkpoints, tmp_path):
    from nemo_terminal.convert.exporter import export_hf

    run = _copy(two_checkpoints, tmp_path)
    big = max((run / "iter_0000004").glob("*.distcp"), key=lambda p: p.stat().st_size)
    data = bytearray(big.read_bytes())
    data[len(data) // 2] ^= 0x10
    big.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"{big.name} differs from its content hash"):
        export_hf(run, tmp_path / "hf", show_progress=False)
    assert not (tmp_path / "hf").exists()
    done = _train(_overrides(train_inputs, run, {"train.max_steps": 6}))
    assert done.returncode != 0
    assert "iter_0000004 is incomplete or corrupt" in done.stderr
    assert f"checkpoint.resume={run / 'iter_0000002'}" in done.stderr

    big.unlink()
    done = _train(_overrides(train_inputs, run, {
        "train.max_steps": 6, "checkpoint.resume": run / "iter_0000004"}))
    assert f"{big.name} is missing" in done.stderr and f"checkpoint.resume={run / 'iter_0000002'}" in done.stderr
    assert "Traceback" not in done.stderr


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _poison_metadata(it: Path, marker: Path) -> None:
    md = pickle.loads((it / ".metadata").read_bytes())  # trusted here: the test wrote this checkpoint
    md.planner_data = {"x": _Payload(marker)}
    (it / ".metadata").write_bytes(pickle.dumps(md))
    integrity.record_hashes(it)  # a crafted checkpoint brings matching hashes


def test_code_in_a_checkpoint_never_runs(train_inputs, two_checkpoints, tmp_path):
    import torch

    from nemo_terminal.checkpoint.safe_pickle import torch_load
    from nemo_terminal.convert.exporter import export_hf

    run = _copy(two_checkpoints, tmp_path)
    marker = tmp_path / "code_ran"
    _poison_metadata(run / "iter_0000004", marker)
    with pytest.raises(UserError, match=r"iter_0000004/\.metadata: refused .* posix\.system"):
        export_hf(run, tmp_path / "hf", show_progress=False)
    verify = subprocess.run([sys.executable, "-m", "nemo_terminal", "verify", "--hf-dir", str(train_inputs["hf"]),
                             "--megatron-dir", str(run)], capture_output=True, text=True, timeout=300, check=False)
    train = _train(_overrides(train_inputs, run, {"train.max_steps": 6}))
    for done in (verify, train):
        assert done.returncode != 0 and "refused to load" in done.stderr and "posix.system" in done.stderr
    assert not marker.exists()

    run2 = tmp_path / "run2"
    shutil.copytree(two_checkpoints, run2)
    it = run2 / "iter_0000004"
    common = torch_load(it / "common.pt")  # the same allow-list megatron's load gets
    common["iteration"] = _Payload(marker)
    torch.save(common, it / "common.pt")
    integrity.record_hashes(it)
    with pytest.raises(UserError, match=r"common\.pt: refused .* posix\.system"):
        export_hf(run2, tmp_path / "hf2", show_progress=False)
    assert not marker.exists()


def test_object_shard_payload_is_refused(two_checkpoints, tmp_path):
    import io

    import torch
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

    from nemo_terminal.checkpoint.preload import check_before_load

    run = _copy(two_checkpoints, tmp_path)
    it = run / "iter_0000004"
    md = pickle.loads((it / ".metadata").read_bytes())
    key = next(k for k, v in md.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata))
    info = md.storage_data[MetadataIndex(key)]
    blob = io.BytesIO()
    torch.save([_Payload(tmp_path / "code_ran")], blob)
    path = it / info.relative_path
    md.storage_data[MetadataIndex(key)] = _StorageInfo(info.relative_path, path.stat().st_size, len(blob.getvalue()))
    with open(path, "ab") as f:
        f.write(blob.getvalue())
    (it / ".metadata").write_bytes(pickle.dumps(md))
    integrity.record_hashes(it)
    with pytest.raises(UserError, match=f"refused to load object {key}.*posix.system"):
        check_before_load(it)
    assert not (tmp_path / "code_ran").exists()


def test_export_refuses_a_config_with_fewer_layers_and_leaves_nothing(two_checkpoints, tmp_path):
    from nemo_terminal.convert.exporter import export_hf

    run = _copy(two_checkpoints, tmp_path)
    cfg = json.loads((run / "model_config.json").read_text())
    (run / "model_config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 1}))
    with pytest.raises(UserError, match="for 1 layers"):
        export_hf(run, tmp_path / "hf", show_progress=False)
    assert not (tmp_path / "hf").exists()


def test_failed_export_leaves_no_partial_safetensors(two_checkpoints, tmp_path):
    """A chunk that cannot be read midway (hashes opted out, so the read itself fails)."""
    from nemo_terminal.checkpoint.safe_pickle import read_dcp_metadata
    from nemo_terminal.convert.exporter import export_hf

    run = _copy(two_checkpoints, tmp_path)
    it = run / "iter_0000004"
    md = read_dcp_metadata(it)
    index = next(i for i in md.storage_data if i.fqn == "decoder.final_layernorm.weight")  # exported late
    info = md.storage_data[index]
    with open(it / info.relative_path, "r+b") as f:
        f.seek(info.offset)
        f.write(b"XXXX")  # the chunk's zip header
    with pytest.raises(UserError, match="decoder.final_layernorm.weight"):
        export_hf(run, tmp_path / "hf", show_progress=False, verify_hashes=False, max_shard_bytes=10**6)
    assert not (tmp_path / "hf").exists()
    assert list(tmp_path.rglob("*.safetensors*")) == []


def test_sigterm_saves_and_exits_75(train_inputs, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "nemo_terminal", "train", "--config", str(RECIPE),
           *_overrides(train_inputs, run, {"train.max_steps": 50})]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not ((run / "metrics.jsonl").is_file() and _rows(run)):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 75, err[-3000:]
    step = _rows(run)[-1]["step"]
    assert (run / "latest").read_text().strip() == f"iter_{step:07d}" and step < 50


def test_checkpoint_writer_processes_die_with_a_sigkilled_trainer(train_inputs, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "nemo_terminal", "train", "--config", str(RECIPE),
           *_overrides(train_inputs, run, {"train.max_steps": 50, "checkpoint.save_interval": 1})]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    trainer = psutil.Process(proc.pid)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (run / "iter_0000002.tmp").is_dir():  # the second save is under way
            time.sleep(0.002)
        helpers = trainer.children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)  # the trainer alone, as the OOM killer would
        proc.wait()
        deadline = time.time() + 20
        while time.time() < deadline and [p for p in helpers if _running(p)]:
            time.sleep(0.1)
        alive = [p.pid for p in helpers if _running(p)]
        assert helpers and not alive, f"{alive} of {[p.pid for p in helpers]} outlived the trainer"
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if _group_alive(proc.pid) else None


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE  # a dead orphan may wait a while for init to reap it
    except psutil.NoSuchProcess:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_hf_dir_import_under_torchrun(train_inputs, tmp_path):
    """Rank 0's import runs with a clean environment; it used to join the training rendezvous and hang."""
    run = tmp_path / "run"
    overrides = [f"run_dir={run}", "model.megatron_dir=null", f"model.hf_dir={train_inputs['hf']}",
                 f"data.path={train_inputs['data']}", "train.global_batch_size=2", "train.max_steps=1",
                 "checkpoint.save_interval=0", "checkpoint.save_final=false"]
    done = _train(overrides, timeout=240, torchrun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "imported" / "latest").is_file() and [r["step"] for r in _rows(run)] == [1]


def test_seq_length_beyond_max_positions_is_refused(train_inputs, tmp_path):
    meg = tmp_path / "meg"
    shutil.copytree(train_inputs["megatron"], meg)
    cfg = json.loads((meg / "model_config.json").read_text())
    (meg / "model_config.json").write_text(json.dumps({**cfg, "max_position_embeddings": 128}))
    done = _train(_overrides({**train_inputs, "megatron": meg}, tmp_path / "run", {}))
    assert done.returncode != 0
    assert "seq_length=256" in done.stderr and "max_position_embeddings=128" in done.stderr
    assert "model.yarn_factor" in done.stderr
