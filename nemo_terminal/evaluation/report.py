"""`eval report`: the paper's Terminal-Bench table from Harbor job directories.

Each trial is one attempt of one task; its score is its verifier reward (0 when the trial ended
without one, e.g. an agent timeout: Terminal-Bench counts those as failures, and the report lists
them by exception). Accuracy is the mean over attempts of each attempt's mean over tasks, with
the standard error over attempts, as leaderboards report it; pass@k is the unbiased estimator
(Chen et al. 2021) averaged over tasks. Categories come from each task's task.toml `[metadata]`.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib  # type: ignore[no-redef]

from nemo_terminal.errors import UserError
from nemo_terminal.harbor.jobs import Trial, find_jobs, read_job

log = logging.getLogger(__name__)

HARBOR_TASK_CACHE = Path("~/.cache/harbor/tasks").expanduser()
UNKNOWN = "(no category)"


def _short(task_name: str) -> str:
    return task_name.rsplit("/", 1)[-1]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read task.toml ({err})") from None


def find_task_toml(trial: Trial, tasks_dirs: Sequence[Path]) -> Path | None:
    """task.toml of a trial's task: its local path, else NAME under a --tasks-dir, else Harbor's cache."""
    short = _short(trial.task_name)
    local = ((trial._result.get("config") or {}).get("task") or {}).get("path")
    candidates = [Path(local)] if local and Path(local).is_absolute() else []
    candidates += [Path(d) / short for d in tasks_dirs]
    for cand in candidates:
        if (cand / "task.toml").is_file():
            return cand / "task.toml"
    cached = sorted(HARBOR_TASK_CACHE.glob(f"**/{short}/task.toml")) if HARBOR_TASK_CACHE.is_dir() else []
    return cached[0] if cached else None


def task_categories(trials: list[Trial], tasks_dirs: Sequence[Path]) -> dict[str, str]:
    """task name -> `[metadata] category` of its task.toml (UNKNOWN when not found)."""
    out: dict[str, str] = {}
    for t in trials:
        if t.task_name not in out:
            path = find_task_toml(t, tasks_dirs)
            meta = _read_toml(path).get("metadata", {}) if path else {}
            out[t.task_name] = str(meta.get("category") or UNKNOWN)
    return out


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k attempts drawn from n, c of them successes, succeeds)."""
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _score(t: Trial) -> float:
    return t.reward if t.reward is not None else 0.0


def _attempts(trials: list[Trial]) -> dict[str, list[Trial]]:
    """task -> its trials in the order they started (attempt 0, 1, ...)."""
    by_task: dict[str, list[Trial]] = defaultdict(list)
    for t in trials:
        by_task[t.task_name].append(t)
    return {k: sorted(v, key=lambda t: (t.started_at or "", t.trial_name)) for k, v in sorted(by_task.items())}


def accuracy(by_task: dict[str, list[Trial]]) -> dict[str, Any]:
    """Mean over attempts of the per-attempt mean score over tasks, and its standard error."""
    k = max((len(v) for v in by_task.values()), default=0)
    per_attempt = [statistics.fmean(_score(v[a]) for v in by_task.values() if len(v) > a) for a in range(k)]
    mean = statistics.fmean(per_attempt) if per_attempt else 0.0
    stderr = statistics.stdev(per_attempt) / math.sqrt(k) if k >= 2 else None
    return {"mean": mean, "stderr": stderr, "per_attempt": per_attempt}


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def build_report(path: str | Path, tasks_dirs: Sequence[str | Path] = ()) -> dict[str, Any]:
    """The report of every finished trial under `path` (a job directory or a directory of them)."""
    jobs = [read_job(p) for p in find_jobs(path)]
    trials = [t for j in jobs for t in j.trials]
    if not trials:
        raise UserError(f"{path}: no finished trial (no trial directory with a result.json)")
    models = sorted({f"{t.agent} / {t.model}" for t in trials})
    if len(models) > 1:
        raise UserError(f"{path} holds trials of different agents/models {models}; report one at a time")
    by_task = _attempts(trials)
    categories = task_categories(trials, [Path(d) for d in tasks_dirs])
    scores = [_score(t) for t in trials]
    min_n = min(len(v) for v in by_task.values())
    binary = all(s in (0.0, 1.0) for s in scores)
    per_category = {}
    for cat in sorted(set(categories.values())):
        sub = {k: v for k, v in by_task.items() if categories[k] == cat}
        per_category[cat] = {"tasks": len(sub), "trials": sum(len(v) for v in sub.values()), **accuracy(sub)}
    return {
        "jobs": [str(j.path) for j in jobs], "agent_model": models[0],
        "tasks": len(by_task), "trials": len(trials), "attempts": max(len(v) for v in by_task.values()),
        "unfinished_trials": [str(p) for j in jobs for p in j.unfinished],
        "accuracy": accuracy(by_task),
        "pass_at_k": {str(k): statistics.fmean(pass_at_k(len(v), sum(_score(t) == 1.0 for t in v), k)
                                               for v in by_task.values()) for k in range(1, min_n + 1)}
        if binary else {},
        "categories": per_category,
        "errors": dict(Counter(t.exception_type for t in trials if t.exception_type)),
        "trials_without_reward": sum(t.reward is None for t in trials),
        "per_trial_mean": {"input_tokens": _mean([t.n_input_tokens for t in trials]),
                           "output_tokens": _mean([t.n_output_tokens for t in trials]),
                           "turns": _mean([t.n_turns for t in trials])},
        "per_task": {k: {"category": categories[k], "scores": [_score(t) for t in v]} for k, v in by_task.items()},
    }


def _pct(acc: dict[str, Any]) -> str:
    se = "" if acc["stderr"] is None else f" ± {100 * acc['stderr']:.1f}"
    return f"{100 * acc['mean']:.1f}%{se}"


def format_report(rep: dict[str, Any]) -> str:
    """The table printed by `eval report`."""
    lines = [f"{rep['agent_model']}: {rep['tasks']} tasks, {rep['trials']} trials ({rep['attempts']} attempts)",
             f"accuracy {_pct(rep['accuracy'])} (mean ± standard error over attempts)"]
    if rep["pass_at_k"]:
        lines.append("  ".join(f"pass@{k} {100 * v:.1f}%" for k, v in rep["pass_at_k"].items()))
    width = max(len(c) for c in rep["categories"]) + 2
    lines.append(f"{'category':<{width}}{'tasks':>6}{'trials':>8}  accuracy")
    for cat, c in rep["categories"].items():
        lines.append(f"{cat:<{width}}{c['tasks']:>6}{c['trials']:>8}  {_pct(c)}")
    m = {k: "n/a" if v is None else f"{v:,.0f}" for k, v in rep["per_trial_mean"].items()}
    lines.append(f"per trial (mean): input tokens {m['input_tokens']}, output tokens {m['output_tokens']}, "
                 f"turns {m['turns']}")
    if rep["errors"]:
        lines.append("ended with an exception (scored 0 unless verified): " +
                     ", ".join(f"{k} {v}" for k, v in sorted(rep["errors"].items())))
    if rep["unfinished_trials"]:
        lines.append(f"not counted: {len(rep['unfinished_trials'])} unfinished trials (no result.json)")
    return "\n".join(lines)


def write_outputs(rep: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """report.json and accuracy_by_category.png in out_dir."""
    import matplotlib  # lazy: 1 s import, only for the optional plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as above, after choosing the Agg backend

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "eval_report.json"
    json_path.write_text(json.dumps(rep, indent=2) + "\n")
    cats = list(rep["categories"].items())
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(cats) + 1.5))
    ax.barh([c for c, _ in cats], [100 * v["mean"] for _, v in cats],
            xerr=[100 * (v["stderr"] or 0.0) for _, v in cats], color="#4c72b0")
    ax.set_xlabel("accuracy (%), mean ± s.e. over attempts")
    ax.set_title(f"{rep['agent_model']}: {_pct(rep['accuracy'])} overall")
    ax.set_xlim(0, 100)
    fig.tight_layout()
    png_path = out / "accuracy_by_category.png"
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return json_path, png_path
