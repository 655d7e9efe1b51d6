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
import pickle
import queue
import signal
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn

from nemo_terminal.errors import UserError

_POLL_S = 0.2  # how often a waiting parent (or an idle worker) checks the other side is alive
# Set in each worker before anything is imported there: the workers are the parallelism, one per
# core. numpy's OpenBLAS otherwise starts a thread per core on import, and those threads spin for
# ~0.07 CPU-s per worker (measured on 2 cores), taken from the other workers.
WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1"}


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


def _failure(seq: int, err: BaseException) -> bytes:
    return pickle.dumps((seq, False, (err if isinstance(err, UserError) else None, _one_line(err),
                                      traceback.format_exc())))


def _worker(setup: bytes, tasks: Any, results: Any, parent: int) -> None:
    """Worker main loop: init, then (seq, item) -> (seq, True, fn(item)) until a None task.

    `setup` is (fn, initializer, initargs), pickled by the parent and unpickled only here, after
    WORKER_ENV is set: unpickling imports fn's module, and with it numpy, whose BLAS would
    otherwise start a thread per core. Results are pickled here, not in the queue's feeder
    thread, where a pickling error would be printed and the result lost (and the parent would
    wait for it forever)."""
    os.environ.update(WORKER_ENV)
    try:
        fn, initializer, initargs = pickle.loads(setup)
        initializer(*initargs)
    except BaseException as err:  # noqa: BLE001 - report any failure, then exit: the parent fails the run
        results.put(_failure(-1, err))
        return
    while True:
        try:
            task = tasks.get(timeout=_POLL_S)
        except queue.Empty:
            if os.getppid() != parent:  # the parent died (e.g. SIGKILL): do not linger
                return
            continue
        if task is None:  # sent only once the parent has received every result
            _exit_now(results)
        seq, item = task
        try:
            results.put(pickle.dumps((seq, True, fn(item)), protocol=pickle.HIGHEST_PROTOCOL))
        except BaseException as err:  # noqa: BLE001 - sent to the parent, which raises it
            results.put(_failure(seq, err))


def _exit_now(results: Any) -> NoReturn:
    """End an idle worker without the interpreter's teardown: freeing a loaded tokenizer and
    unloading modules took 0.07-0.26 s per worker (measured), time the run waited for at its end."""
    results.close()
    results.join_thread()  # nothing is pending (the parent has every result); wait for the feeder anyway
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os._exit(0)


def _raise_remote(seq: int, payload: tuple) -> None:
    user_err, line, tb = payload
    if user_err is not None:
        raise user_err
    where = "while starting (initializer)" if seq < 0 else f"on task {seq}"
    raise WorkerError(f"a worker process failed {where}: {line}\n{tb}")


class WorkerPool:
    """`workers` spawned processes running `fn`, each set up by `initializer(*initargs, True)`.

    Started on construction, so workers load (e.g. a tokenizer) while the caller does other
    work; `map` may be called once. Use as a context manager, or call `close()`: it stops and
    reaps every worker, whatever state the run is in.
    """

    def __init__(self, fn: Callable[[Any], Any], workers: int, initializer: Callable[..., None],
                 initargs: tuple, in_flight: int = 0):
        self.in_flight = in_flight or 8 * workers  # a slow task stalls the others only when this is full
        # spawn, not fork: the parent may hold threads (tokenizers' rayon pool, torch) that fork would copy broken.
        ctx = mp.get_context("spawn")
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        setup = pickle.dumps((fn, initializer, (*initargs, True)), protocol=pickle.HIGHEST_PROTOCOL)
        self.procs = [ctx.Process(target=_worker, name=f"prepare-worker-{i}", daemon=True,
                                  args=(setup, self.tasks, self.results, os.getpid()))
                      for i in range(workers)]
        for p in self.procs:
            p.start()
        self._drained = False  # every result was yielded: workers are idle and may exit cleanly

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(self, items: Iterable[Any]) -> Iterator[Any]:
        """Yield fn(item) in input order, with at most `in_flight` items sent but not yet yielded."""
        source = iter(items)
        sent = next_out = 0
        done: dict[int, Any] = {}
        exhausted = False
        while True:
            while not exhausted and sent - next_out < self.in_flight:  # keep the workers fed
                try:
                    self.tasks.put((sent, next(source)))
                    sent += 1
                except StopIteration:
                    exhausted = True
            if next_out in done:
                yield done.pop(next_out)
                next_out += 1
                continue
            if exhausted and next_out == sent:
                self._drained = True
                return
            seq, ok, payload = _receive(self.results, self.procs)
            if not ok:
                _raise_remote(seq, payload)
            done[seq] = payload

    def close(self) -> None:
        """Ask idle workers to exit; kill them at once after a failed or abandoned run."""
        for p in self.procs:
            if p.is_alive() and self._drained:
                self.tasks.put(None)
        for p in self.procs:
            p.join(timeout=10 if self._drained else 0)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        for q in (self.tasks, self.results):
            q.cancel_join_thread()  # never block on unsent items
            q.close()


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
    with WorkerPool(fn, workers, initializer, initargs, in_flight) as pool:
        yield from pool.map(items)


def _receive(results: Any, procs: list) -> tuple[int, bool, Any]:
    """The next result; a WorkerError as soon as any worker has exited without being asked to
    (a worker's own error report, sent just before it exits, is preferred as the cause)."""
    while True:
        dead = next((p for p in procs if not p.is_alive()), None)
        if dead is None:
            try:
                return pickle.loads(results.get(timeout=_POLL_S))
            except queue.Empty:
                continue
        try:
            while True:
                seq, ok, payload = pickle.loads(results.get(timeout=_POLL_S))
                if not ok:
                    return seq, ok, payload
        except queue.Empty:
            pass
        raise WorkerError(
            f"prepare worker {dead.name} (pid {dead.pid}) {_describe_exit(dead.exitcode)}; the run is "
            "stopped and nothing was published: re-run the same command to prepare again")
