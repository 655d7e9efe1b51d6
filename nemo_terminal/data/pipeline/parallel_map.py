"""An order-preserving, back-pressured map over worker processes that never hangs on a dead worker.

`multiprocessing.Pool` hides worker deaths: a worker killed by the out-of-memory killer leaves
its task unanswered forever, and a failing initializer makes the pool respawn workers endlessly.
Here each worker is a plain spawned process: tasks go out on one queue, results come back on
another, tagged with their sequence number, and the caller re-orders them. While waiting, the
parent checks every worker's liveness, so a death ends the run with a `WorkerError` naming the
worker, its exit code and the likely cause; an initializer or task failure is sent back and
re-raised in the parent. At most `in_flight` tasks are outstanding (sent but not yet yielded),
so memory stays bounded whatever the input size, and a slow task does not stall the others
until the window is full.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import traceback
from typing import Any, Callable, Iterable, Iterator

from nemo_terminal.errors import UserError

_POLL_S = 0.2  # how often a waiting parent (or an idle worker) checks the other side is alive


class WorkerError(UserError):
    """A worker process died or failed; the message names it and the cause."""


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the out-of-memory killer sends SIGKILL: lower --workers or check memory)" if -code == 9 else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _worker(fn: Callable[[Any], Any], initializer: Callable[..., None], initargs: tuple,
            tasks: Any, results: Any, parent: int) -> None:
    """Worker main loop: init, then (seq, item) -> (seq, True, fn(item)) until a None task."""
    try:
        initializer(*initargs)
    except BaseException as err:  # report, then exit: the parent fails the run (no respawn)
        results.put((-1, False, (err if isinstance(err, UserError) else None, _one_line(err),
                                 traceback.format_exc())))
        return
    while True:
        try:
            task = tasks.get(timeout=_POLL_S)
        except queue.Empty:
            if os.getppid() != parent:  # the parent died (e.g. SIGKILL): do not linger
                return
            continue
        if task is None:
            return
        seq, item = task
        try:
            results.put((seq, True, fn(item)))
        except BaseException as err:
            results.put((seq, False, (err if isinstance(err, UserError) else None, _one_line(err),
                                      traceback.format_exc())))


def _raise_remote(seq: int, payload: tuple) -> None:
    user_err, line, tb = payload
    if user_err is not None:
        raise user_err
    where = "while starting (initializer)" if seq < 0 else f"on task {seq}"
    raise WorkerError(f"a worker process failed {where}: {line}\n{tb}")


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int,
                initializer: Callable[..., None], initargs: tuple, in_flight: int = 0) -> Iterator[Any]:
    """Yield fn(item) in input order. `initializer(*initargs, in_pool)` sets up each process.

    workers <= 1 runs in this process (no pickling at all). Closing the generator early (or an
    exception in the caller) stops and reaps every worker.
    """
    if workers <= 1:
        initializer(*initargs, False)
        for item in items:
            yield fn(item)
        return
    in_flight = in_flight or 8 * workers
    # spawn, not fork: the parent may hold threads (tokenizers' rayon pool, torch) that fork would copy broken.
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_worker, name=f"prepare-worker-{i}", daemon=True,
                         args=(fn, initializer, (*initargs, True), tasks, results, os.getpid()))
             for i in range(workers)]
    for p in procs:
        p.start()
    source = iter(items)
    sent = next_out = 0
    done: dict[int, Any] = {}
    exhausted = False
    try:
        while True:
            while not exhausted and sent - next_out < in_flight:  # keep the workers fed
                try:
                    tasks.put((sent, next(source)))
                    sent += 1
                except StopIteration:
                    exhausted = True
            if next_out in done:
                yield done.pop(next_out)
                next_out += 1
                continue
            if exhausted and next_out == sent:
                break
            seq, ok, payload = _receive(results, procs)
            if not ok:
                _raise_remote(seq, payload)
            done[seq] = payload
        for _ in procs:
            tasks.put(None)
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=5)
        for q in (tasks, results):
            q.cancel_join_thread()  # never block interpreter exit on unsent items
            q.close()


def _receive(results: Any, procs: list) -> tuple[int, bool, Any]:
    """The next result; a WorkerError as soon as any worker has exited without being asked to."""
    while True:
        try:
            return results.get(timeout=_POLL_S)
        except queue.Empty:
            pass
        for p in procs:
            if not p.is_alive():
                try:  # a failing initializer reports before it exits: prefer its message
                    seq, ok, payload = results.get(timeout=_POLL_S)
                    return seq, ok, payload
                except queue.Empty:
                    pass
                raise WorkerError(
                    f"prepare worker {p.name} (pid {p.pid}) {_describe_exit(p.exitcode)}; the run is "
                    "stopped and nothing was published: re-run the same command to prepare again")
