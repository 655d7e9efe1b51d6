"""Checkpoints resume exactly, and a kill mid-save never publishes a broken checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from _runs import base_overrides


def _train_cmd(overrides: list[str]) -> list[str]:
    repo = Path(__file__).resolve().parents[3]
    return [sys.executable, "-m", "nemo_terminal", "train", "--config", str(repo / "configs" / "tiny_cpu.yaml"),
            *overrides]


def _losses(run_dir: Path, key: str = "loss") -> dict[int, float]:
    """step -> loss; a step logged twice (re-run after a kill) keeps its last record."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if key in rec:
            out[rec["step"]] = rec[key]
    return out


def _run_until(cmd: list[str], predicate, timeout: float = 240) -> bool:
    """Start cmd; SIGKILL it the moment predicate() holds. Returns whether it was killed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if predicate():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, proc.stderr.read()[-4000:]
    return False


def test_resume_is_bit_exact(train_inputs, tmp_path):
    common = dict(**{"train.max_steps": 6, "checkpoint.save_interval": 3, "checkpoint.resume": "auto",
                     "train.eval_interval": 3, "data.val_fraction": 0.2})
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(base_overrides(train_inputs, straight, **common)), check=True, capture_output=True)

    resumed = tmp_path / "resumed"
    cmd = _train_cmd(base_overrides(train_inputs, resumed, **common))
    latest = resumed / "latest"
    killed = _run_until(cmd, lambda: latest.is_file() and latest.read_text().strip() == "iter_0000003")
    assert killed, "the run finished before it could be killed after step 3"
    subprocess.run(cmd, check=True, capture_output=True)

    a, b = _losses(straight), _losses(resumed)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    assert a == b  # bit for bit: the same floats, not merely close
    val_a, val_b = _losses(straight, "val_loss"), _losses(resumed, "val_loss")
    assert sorted(val_a) == [3, 6] and val_a == val_b
    assert val_a[6] < val_a[3]  # held-out bins: the model generalizes a little

    # The step-3 checkpoint of the one-process run resumes at dp=2 (2 processes) onto the same curve.
    wider = tmp_path / "wider"
    shutil.copytree(straight, wider, ignore=shutil.ignore_patterns("iter_0000006", "metrics.jsonl"))
    (wider / "latest").write_text("iter_0000003\n")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd = _train_cmd(base_overrides(train_inputs, wider, **common))
    subprocess.run(torchrun + cmd[1:], check=True, capture_output=True)
    c = _losses(wider)
    assert sorted(c) == [4, 5, 6]
    for step in c:
        assert abs(c[step] - a[step]) <= 1e-5 * a[step], (step, c[step], a[step])


def test_kill_during_save_keeps_latest_complete(train_inputs, tmp_path):
    run = tmp_path / "run"
    cmd = _train_cmd(base_overrides(train_inputs, run, **{"train.max_steps": 4, "checkpoint.save_interval": 2,
                                                          "checkpoint.resume": "auto"}))
    tmp_ckpt = run / "iter_0000004.tmp"
    killed = _run_until(cmd, lambda: tmp_ckpt.is_dir() and any(tmp_ckpt.iterdir()))
    assert killed, "the save of step 4 finished before it could be interrupted"
    assert not (run / "iter_0000004").exists()
    assert (run / "latest").read_text().strip() == "iter_0000002"
    assert (run / "iter_0000002" / "metadata.json").is_file()
    # and the run resumes from the published checkpoint to the end
    subprocess.run(cmd, check=True, capture_output=True)
    assert (run / "latest").read_text().strip() == "iter_0000004"
    assert sorted(_losses(run)) == [1, 2, 3, 4]
