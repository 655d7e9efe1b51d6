"""Run a function in real torch.distributed processes (gloo on CPU), for tests and tools.

Each rank is a separate spawned process with its own rendezvous, exactly as
under torchrun, so multi-process behaviour is exercised for real.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable


def _worker(rank: int, world_size: int, port: int, fn: Callable, kwargs: dict, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
    )
    import torch

    torch.set_num_threads(1)
    result: dict[str, Any]
    try:
        from nemo_terminal.runtime import destroy, init_distributed

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
    from nemo_terminal.runtime.distributed import free_port

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
