"""Stop cleanly on preemption: save after the current step, then exit."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import torch.distributed as dist

from nemo_terminal.runtime.device import current_device

EXIT_PREEMPTED = 75
"""`train`'s exit code after a preemption signal: the run saved and stopped early (sysexits.h
EX_TEMPFAIL, "try again later"); slurm/train.sbatch requeues on it. A finished run exits 0."""


def exit_together(code: int) -> None:
    """Every rank leaves with `code` at the same moment; never returns.

    Under `srun --kill-on-bad-exit` the first task to exit non-zero gets the others killed, and the
    step's exit code becomes the kill's (143) if one is still in teardown (rank 0, serving the
    rendezvous store, takes seconds). So: a barrier, flush, and `os._exit` with no teardown (the
    checkpoint is saved and published; writer helpers die with the process, see
    checkpoint/writer_processes.py)."""
    if dist.is_initialized():
        dist.barrier()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class PreemptionFlag:
    """SIGTERM/SIGUSR1 (Slurm preemption, scancel, time limit) -> save after this step, then stop.

    The handler only sets a flag; ranks agree on it with one all-reduce per
    step, so every rank saves the same step even if only some got the signal.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.name: str | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.name = signal.Signals(signum).name

    def agreed(self) -> bool:
        flag = current_device().zeros(1)
        flag[0] = 1.0 if self.name else 0.0
        dist.all_reduce(flag)
        if flag.item() > 0 and not self.name:
            self.name = "a signal to another rank"
        return flag.item() > 0

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
