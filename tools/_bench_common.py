"""Helpers shared by the benchmark scripts in tools/: timing, summaries, ratios, results.

Every subject compares its work with a baseline measured in the same process run, so that the
ratio is meaningful on a shared, noisy machine. Interleaving the two (ABAB, order flipped every
repetition) keeps slow drift (thermal state, a neighbour's job, a growing page cache) from
landing on one side only.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def summary(xs: list[float]) -> dict[str, Any]:
    """Median and range of repetitions; the median is the figure, min–max says how noisy it was."""
    if not xs:
        raise ValueError("no repetitions to summarize")
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "all": list(xs)}


def time_interleaved(subjects: dict[str, Callable[[], Any]], reps: int, warmup: int = 0,
                     sync: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each subject, `reps` times after `warmup` untimed rounds.

    Subjects run in turn within a round; the order is reversed every other round. `sync` (e.g.
    torch.cuda.synchronize) runs before and after each timed call so queued GPU work is counted.
    """
    names = list(subjects)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + reps):
        for name in (names if r % 2 == 0 else names[::-1]):
            if sync:
                sync()
            t0 = time.perf_counter()
            subjects[name]()
            if sync:
                sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def ratio(num: list[float], den: list[float]) -> dict[str, Any]:
    """median(num)/median(den), plus the range of per-repetition ratios when reps pair up."""
    out: dict[str, Any] = {"of_medians": statistics.median(num) / statistics.median(den)}
    if len(num) == len(den):
        per_rep = [a / b for a, b in zip(num, den, strict=True)]
        out.update(min=min(per_rep), max=max(per_rep))
    return out


def num(x: float) -> str:
    """Readable at any magnitude: 4,314 / 12.5 / 0.0321."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def fmt(s: dict[str, Any], unit: str = "s", scale: float = 1.0) -> str:
    """'median X unit (min A – max B)' for a `summary` dict."""
    return f"median {num(s['median'] * scale)} {unit} (min {num(s['min'] * scale)} – max {num(s['max'] * scale)})"


def fmt_ratio(r: dict[str, Any], target: str | None = None) -> str:
    text = f"{r['of_medians']:.3f}"
    if "min" in r:
        text += f" (per-rep {r['min']:.3f} – {r['max']:.3f})"
    return text + (f"; target {target}" if target else "")


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM), MiB. Unlike ru_maxrss, an exec'd child does not
    inherit its parent's high-water mark through it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, Any]:
    """What the figures were measured on; a result without this cannot be compared."""
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "python": sys.version.split()[0]}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def write_result(path: str | Path | None, subject: str, result: dict[str, Any]) -> Path | None:
    """One JSON file per run: the subject, the machine, a timestamp, then the subject's figures."""
    if not path:
        return None
    doc = {"subject": subject, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), **result}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return out
