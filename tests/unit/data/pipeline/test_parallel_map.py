"""ordered_map: input order kept, and a dead or failing worker ends the run quickly (never a hang)."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from nemo_terminal.data.pipeline.parallel_map import WorkerError, ordered_map
from nemo_terminal.errors import UserError

_STATE = {}


def _init(tag: str, in_pool: bool) -> None:
    if tag == "fail":
        raise RuntimeError("initializer exploded")
    if tag == "user":
        raise UserError("tokenizer lacks the Qwen3 chat tokens")
    _STATE["pid"] = os.getpid()


def _square_slowly(x: int) -> tuple[int, int]:
    time.sleep(0.01 * (x % 3))  # uneven task times: results arrive out of order
    return x * x, os.getpid()


def _die_on_seven(x: int) -> int:
    if x == 7:
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
    return x


def _raise_on_three(x: int) -> int:
    if x == 3:
        raise KeyError("bad record 3")
    return x


def test_results_in_input_order_from_several_processes():
    out = list(ordered_map(_square_slowly, range(60), 2, _init, ("ok",), in_flight=5))
    assert [v for v, _ in out] == [x * x for x in range(60)]
    assert os.getpid() not in {pid for _, pid in out}  # computed in the workers (how many is up to timing)


def test_killed_worker_ends_the_run_with_its_cause():
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"killed by SIGKILL.*out-of-memory.*re-run"):
        list(ordered_map(_die_on_seven, range(40), 2, _init, ("ok",)))
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("tag, match", [("fail", r"while starting.*RuntimeError: initializer exploded"),
                                        ("user", r"^tokenizer lacks the Qwen3 chat tokens$")])
def test_failing_initializer_fails_once_instead_of_respawning(tag, match):
    start = time.monotonic()
    with pytest.raises(UserError, match=match):
        list(ordered_map(_square_slowly, range(10), 2, _init, (tag,)))
    assert time.monotonic() - start < 60


def test_task_exception_is_raised_in_the_parent_and_workers_are_reaped():
    import multiprocessing as mp

    with pytest.raises(WorkerError, match=r"on task 3: KeyError: 'bad record 3'"):
        list(ordered_map(_raise_on_three, range(10), 2, _init, ("ok",), in_flight=1))
    assert not [p for p in mp.active_children() if p.name.startswith("prepare-worker")]


def test_closing_early_stops_the_workers():
    import multiprocessing as mp

    gen = ordered_map(_square_slowly, range(1000), 2, _init, ("ok",))
    assert next(gen)[0] == 0
    gen.close()
    assert not [p for p in mp.active_children() if p.name.startswith("prepare-worker")]


def _modules(_: int) -> list[str]:
    return sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "megatron", "transformers"))


def test_prepare_workers_import_no_torch(tokenizer_dir):
    """The real prepare worker (processing.init_worker) stays free of torch/megatron/transformers."""
    from nemo_terminal.data.pipeline.config import PrepareConfig
    from nemo_terminal.data.pipeline.processing import init_worker

    cfg = PrepareConfig(seq_length=64, progress=False)
    out = list(ordered_map(_modules, range(2), 2, init_worker, (str(tokenizer_dir), cfg, None, 2)))
    assert out == [[], []]


def _workers_of(pid: int) -> list[int]:
    """Spawned worker processes of `pid` (not multiprocessing's resource tracker)."""
    from pathlib import Path

    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = []
    for k in kids:
        try:
            cmd = Path(f"/proc/{k}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            out.append(int(k))
    return out


def test_prepare_with_a_killed_worker_fails_with_the_cause_and_reruns(tmp_path, tokenizer_dir):
    import subprocess

    from nemo_terminal.data.pipeline.synthetic import write_jsonl
    from nemo_terminal.data.store import PackedDataset

    src = write_jsonl(tmp_path / "c.jsonl", 300, seed=0)
    cmd = [sys.executable, "-m", "nemo_terminal", "prepare", "--input", str(src), "--tokenizer", str(tokenizer_dir),
           "--out", str(tmp_path / "ds"), "--seq-length", "4096", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (workers := _workers_of(proc.pid)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workers, "prepare did not start its workers"
    os.kill(workers[0], signal.SIGKILL)  # as the out-of-memory killer would
    _, err = proc.communicate(timeout=120)  # a hang fails here
    assert proc.returncode == 1 and "killed by SIGKILL" in err and "re-run" in err, err[-2000:]
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds.tmp-*"))
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert PackedDataset(tmp_path / "ds").report["records_kept"] == 300


def test_non_qwen_tokenizer_fails_once_with_workers(tmp_path):
    """The reported case: a tokenizer without Qwen's chat tokens respawned pool workers for minutes."""
    from tokenizers import Tokenizer, models

    from nemo_terminal.data.pipeline.config import PrepareConfig
    from nemo_terminal.data.pipeline.prepare import prepare_dataset
    from nemo_terminal.data.pipeline.synthetic import write_jsonl

    tok_dir = tmp_path / "wordlevel"
    tok_dir.mkdir()
    Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]")).save(str(tok_dir / "tokenizer.json"))
    (tok_dir / "tokenizer_config.json").write_text("{}")
    src = write_jsonl(tmp_path / "c.jsonl", 40, seed=0)
    start = time.monotonic()
    with pytest.raises(UserError, match=r"wordlevel: tokenizer lacks the Qwen3 chat tokens .*--tokenizer"):
        prepare_dataset([str(src)], tok_dir, tmp_path / "ds", PrepareConfig(seq_length=1024, workers=2, progress=False))
    assert time.monotonic() - start < 60 and not (tmp_path / "ds").exists()
