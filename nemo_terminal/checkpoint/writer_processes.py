"""megatron's checkpoint writer processes die with the trainer, whatever kills it.

megatron-core's torch_dist save (`FileSystemWriterAsync`, used for synchronous saves too)
forks one writer process per bucket for every save, and keeps a results queue served by a
spawned `multiprocessing` Manager process for the rest of the run. Neither is a daemon nor
watches its parent: after a SIGKILL (OOM killer, a node agent) of the trainer, the Manager
lives on forever and the writers finish or hang on their own.

`make_writers_die_with_trainer()` (once per process, before the first save) sets Linux's
parent-death signal (SIGKILL) in both: in every process this one forks (`os.register_at_fork`),
and in a Manager started here, with that as its initializer, and handed to megatron as its
results queue. Elsewhere than Linux it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
from multiprocessing.managers import SyncManager

from nemo_terminal.runtime import megatron_compat

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_installed = False


def die_with_parent(parent_pid: int) -> None:
    """In a child: ask the kernel for SIGKILL when the parent exits; exit now if it already has."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _serve_until_parent_dies(parent_pid: int) -> None:
    """The Manager's initializer. It ignores the preemption signals: Slurm's `scancel --signal=USR1`
    (and a SIGTERM preemption) reach every process of the step, and a Manager killed by them
    breaks the save the trainer is making in answer to that very signal (BrokenPipeError)."""
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    die_with_parent(parent_pid)


def _manager_dying_with(parent_pid: int):
    """A spawned multiprocessing Manager that gets SIGKILL when `parent_pid` exits."""
    manager = SyncManager(ctx=mp.get_context("spawn"))
    manager.start(initializer=_serve_until_parent_dies, initargs=(parent_pid,))
    return manager


def make_writers_die_with_trainer() -> None:
    global _installed
    if _installed or not sys.platform.startswith("linux"):
        return
    _installed = True
    me = os.getpid()
    # Forks from the main thread (megatron's writers) get the signal; the parent-death signal is
    # tied to the forking thread, and a sync save forks from the main thread.
    os.register_at_fork(after_in_child=lambda: die_with_parent(me))
    if not megatron_compat.replace_writer_results_queue(lambda: _manager_dying_with(me).Queue()):
        log.warning("megatron-core's checkpoint writer queue is not where expected: its Manager process "
                    "will not die with this one after a SIGKILL")
