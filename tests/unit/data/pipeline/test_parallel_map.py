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
    assert len({pid for _, pid in out}) == 2 and os.getpid() not in {pid for _, pid in out}


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
