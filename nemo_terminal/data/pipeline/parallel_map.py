"""An order-preserving, back-pressured map over worker processes.

`Pool.imap` alone reads its input iterator as fast as it can, which would pull the whole corpus
into memory when tokenizing is the bottleneck. Gating the input with a semaphore keeps at most
`in_flight` chunks between the reader and the consumer, so memory stays bounded.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from typing import Any, Callable, Iterable, Iterator


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int,
                initializer: Callable[..., None], initargs: tuple, in_flight: int = 0) -> Iterator[Any]:
    """Yield fn(item) in input order. workers == 1 runs in this process (no pickling at all)."""
    if workers <= 1:
        initializer(*initargs, False)
        for item in items:
            yield fn(item)
        return
    in_flight = in_flight or 4 * workers
    slots = threading.BoundedSemaphore(in_flight)
    stop = threading.Event()

    def gated() -> Iterator[Any]:  # runs in the pool's task-feeder thread
        for item in items:
            while not slots.acquire(timeout=0.1):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            yield item

    # spawn, not fork: the parent may hold threads (tokenizers' rayon pool, torch) that fork would copy broken.
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=initializer, initargs=(*initargs, True)) as pool:
        try:
            for result in pool.imap(fn, gated()):
                slots.release()
                yield result
        finally:
            stop.set()  # lets the feeder thread finish so the pool can shut down
