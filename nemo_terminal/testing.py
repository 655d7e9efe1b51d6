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

from nemo_terminal.runtime.launch import free_port


def _worker(rank: int, world_size: int, port: int, fn: Callable, kwargs: dict, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
    )
    import torch  # lazy: after OMP_NUM_THREADS is set; the test process itself needs no torch or megatron-core

    from nemo_terminal.runtime.distributed import destroy, init_distributed  # lazy: as above

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


class LocalChatServer:
    """A real OpenAI-compatible HTTP endpoint on 127.0.0.1 for tests, without a model.

    This runs the server, keeps each POSTed request in `.requests` (as `record` makes it) and sends
    JSON; a subclass says what to answer in `answer`. Use as a context manager; `.url` is the base URL.
    """

    model = "local"

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, status: int, payload: dict, headers: dict[str, str]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming; /v1/models
                self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]}, {})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server.lock:
                    server.requests.append(server.record(dict(self.headers.items()), body))
                    count = len(server.requests)
                self._send(*server.answer(self.path, body, count))

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def record(self, headers: dict[str, str], body: dict) -> Any:
        """What `.requests` keeps of one request: its body."""
        return body

    def answer(self, path: str, body: dict, count: int) -> tuple[int, dict, dict[str, str]]:
        """(status, JSON payload, extra headers) for the `count`-th request."""
        raise NotImplementedError

    def __enter__(self) -> LocalChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class ScriptedChatServer(LocalChatServer):
    """Answers /v1/chat/completions with `replies` in turn (the last repeats).

    Lets a real agent (Harbor's Terminus-2 via LiteLLM, `hosted_vllm/NAME` with api_base=`.url`)
    run end to end offline; every request body is kept in `.requests` for assertions.
    """

    def __init__(self, replies: list[str], model: str = "scripted"):
        self.replies, self.model = list(replies), model
        super().__init__()

    def answer(self, path: str, body: dict, count: int) -> tuple[int, dict, dict[str, str]]:
        reply = self.replies[min(count, len(self.replies)) - 1]
        prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4  # rough
        return 200, {
            "id": f"chatcmpl-{count}", "object": "chat.completion", "created": 0, "model": self.model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": len(reply) // 4,
                      "total_tokens": prompt + len(reply) // 4},
        }, {}


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
