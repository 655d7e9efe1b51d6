"""Helpers for tests and tools: real torch.distributed processes, and system-tool requirements.

`run_distributed`: each rank is a separate spawned process with its own rendezvous, exactly as
under torchrun, so multi-process behaviour is exercised for real.
`require_tool` / `require`: a test needing a system tool skips on a developer's machine and fails
in CI (env CI set), so a broken install step can never turn into a green run.
"""

from __future__ import annotations

import http.server
import json
import multiprocessing as mp
import os
import pickle
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nemo_terminal.runtime.distributed import destroy, free_port, init_distributed


def _worker(rank: int, world_size: int, port: int, fn: Callable, kwargs: dict, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
    )

    torch.set_num_threads(1)
    result: dict[str, Any]
    try:
        init_distributed(timeout_minutes=5)
        result = {"ok": fn(**kwargs)}
        destroy()
    except BaseException:  # report everything, including SystemExit, to the parent
        result = {"error": traceback.format_exc()}
    with open(out, "wb") as f:
        pickle.dump(result, f)


def run_distributed(fn: Callable, world_size: int = 2, timeout: float = 300, **kwargs: Any) -> list[Any]:
    """Run `fn(**kwargs)` on `world_size` ranks; return each rank's result, in rank order.

    `fn` must be importable at module level (spawned processes import it by name).
    Raises RuntimeError carrying the first failing rank's traceback.
    """
    ctx = mp.get_context("spawn")

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"rank{r}.pkl") for r in range(world_size)]
        procs = [
            ctx.Process(target=_worker, args=(r, world_size, port, fn, kwargs, outs[r]), daemon=False)
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout)
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
        results = []
        for r, out in enumerate(outs):
            if not os.path.exists(out):
                why = "timed out" if r in hung else f"died with exit code {procs[r].exitcode}"
                raise RuntimeError(f"rank {r} {why} without a result")
            with open(out, "rb") as f:
                res = pickle.load(f)
            if "error" in res:
                raise RuntimeError(f"rank {r} failed:\n{res['error']}")
            results.append(res["ok"])
        return results


# --- System tools: skip on a developer's machine, fail in CI --------------------------------------

INSTALL_HINT = "sudo tools/ci_system_deps.sh"


def in_ci() -> bool:
    """True when env CI is set to anything but "", "0" or "false" (CI sets CI=true)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def require(missing: str | None) -> None:
    """Skip the calling test because of `missing` (what is absent), or fail it under CI.

    A CI run that silently skips because an install step broke would be green for nothing, so in
    CI every missing system dependency is a failure. None means nothing is missing.
    """
    if missing is None:
        return
    import pytest  # lazy: pytest is the test extra; the package imports without it

    if in_ci():
        pytest.fail(f"{missing}; CI={os.environ.get('CI')!r} makes this a failure ({INSTALL_HINT})", pytrace=False)
    pytest.skip(f"{missing} ({INSTALL_HINT})")


def find_tool(name: str) -> str | None:
    """`name` on PATH, or in /usr/sbin and /sbin (daemons live there and PATH may lack them)."""
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/sbin"):
        if os.access(Path(d, name), os.X_OK):
            return str(Path(d, name))
    return None


def require_tool(name: str) -> str:
    """The path of executable `name`; skips (or fails in CI, see `require`) when it is absent."""
    path = find_tool(name)
    require(None if path else f"{name} is not installed")
    assert path is not None
    return path


# --- A scripted OpenAI-compatible chat server: a real HTTP endpoint for agents, without a model ---


class ScriptedChatServer:
    """Serve /v1/chat/completions on 127.0.0.1, answering with `replies` in turn (the last repeats).

    Lets a real agent (Harbor's Terminus-2 via LiteLLM, `hosted_vllm/NAME` with api_base=`.url`)
    run end to end offline; every request body is kept in `.requests` for assertions.
    Use as a context manager.
    """

    def __init__(self, replies: list[str], model: str = "scripted"):
        self.replies, self.model, self.requests = list(replies), model, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # /v1/models
                self._send({"object": "list", "data": [{"id": server.model, "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    server.requests.append(body)
                    reply = server.replies[min(len(server.requests), len(server.replies)) - 1]
                prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4  # rough
                self._send({
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion", "created": 0,
                    "model": server.model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": reply}}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": len(reply) // 4,
                              "total_tokens": prompt + len(reply) // 4},
                })

            def log_message(self, *args: Any) -> None:
                pass

        self._lock = threading.Lock()
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def process_gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether `pid` has exited within `timeout` seconds (for tests that check nothing is left running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
