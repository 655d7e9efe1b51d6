"""Stop cleanly on preemption: save after the current step, then exit."""

from __future__ import annotations

import signal
import threading
from typing import Optional

import torch
import torch.distributed as dist

from nemo_terminal.runtime import on_gpu


class PreemptionFlag:
    """SIGTERM/SIGUSR1 (Slurm preemption, scancel, time limit) -> save after this step, then stop.

    The handler only sets a flag; ranks agree on it with one all-reduce per
    step, so every rank saves the same step even if only some got the signal.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.name: Optional[str] = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.name = signal.Signals(signum).name

    def agreed(self) -> bool:
        flag = torch.tensor([1.0 if self.name else 0.0], device="cuda" if on_gpu() else "cpu")
        dist.all_reduce(flag)
        if flag.item() > 0 and not self.name:
            self.name = "a signal to another rank"
        return flag.item() > 0

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
