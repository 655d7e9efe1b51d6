"""A `vllm serve` process that is up (healthy) inside a `with` block and gone after it, however
the block ends: an exception, SIGTERM/SIGINT (Slurm's scancel and time limit), or our own death
(the child gets SIGTERM through PR_SET_PDEATHSIG on Linux)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from nemo_terminal.errors import UserError

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived while the server was up."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


class VllmServer:
    """`with VllmServer(argv, health_url, log_path, timeout_s):` starts, waits for /health, stops."""

    def __init__(self, argv: list[str], health_url: str, log_path: Path, timeout_s: float):
        self.argv, self.health_url, self.log_path, self.timeout_s = argv, health_url, Path(log_path), timeout_s
        self.proc: subprocess.Popen | None = None
        self._old_handlers: dict[int, Any] = {}

    def __enter__(self) -> VllmServer:
        if is_healthy(self.health_url):
            raise UserError(f"{self.health_url} already answers: another server holds the port; pass --port")
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            try:
                self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True, preexec_fn=_die_with_parent)
            except OSError as err:
                self._restore()
                raise UserError(f"cannot start {self.argv[0]!r} ({err.strerror}): install vLLM or pass "
                                "--vllm") from None
        log.info("vllm serve started (pid %d, log %s); waiting for %s", self.proc.pid, self.log_path, self.health_url)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _on_signal(self, signum: int, frame: Any) -> None:
        raise Interrupted(f"signal {signal.Signals(signum).name}")

    def _restore(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise UserError(f"vllm serve exited with code {self.proc.returncode} before it was healthy; "
                                f"see {self.log_path}")
            if is_healthy(self.health_url):
                log.info("vllm serve is healthy")
                return
            time.sleep(1.0)
        raise UserError(f"vllm serve was not healthy after {self.timeout_s:.0f} s; see {self.log_path}")

    def stop(self, grace_s: float = 60.0) -> None:
        """SIGTERM to the server's whole process group, SIGKILL after `grace_s`. A second signal
        while stopping is ignored, so it cannot cut the shutdown short."""
        for sig in self._old_handlers:
            signal.signal(sig, signal.SIG_IGN)
        try:
            if self.proc is not None and self.proc.poll() is None:
                log.info("stopping vllm serve (pid %d)", self.proc.pid)
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                    self.proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
                except ProcessLookupError:
                    pass
            if self.proc is not None:
                try:  # workers (TP ranks) left behind by a server that died first
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        finally:
            self._restore()
