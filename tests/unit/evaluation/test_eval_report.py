"""`eval report` on Harbor job directories: a Terminal-Bench-like job written through Harbor 0.25's
own result models (tests/fixtures/make_harbor_eval_job.py; its stats and pass@k are Harbor's), and
the real oracle/nop jobs Harbor ran locally (tests/fixtures/harbor_job)."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import pytest

from nemo_terminal.errors import UserError
from nemo_terminal.evaluation.report import UNKNOWN, build_report, format_report, write_outputs

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
JOB = FIXTURES / "harbor_eval_job" / "tb2-qwen3-8b"
TASKS = FIXTURES / "harbor_eval_job" / "tasks"


def _raw_scores() -> dict[str, list[float]]:
    """task -> rewards by attempt, read straight from the trials' result.json (0 without a verifier result)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for res in sorted(JOB.glob("*/result.json")):
        r = json.loads(res.read_text())
        reward = ((r.get("verifier_result") or {}).get("rewards") or {}).get("reward", 0.0)
        out.setdefault(r["task_name"], []).append((r["started_at"], float(reward)))
    return {k: [s for _, s in sorted(v)] for k, v in out.items()}


def test_accuracy_stderr_and_pass_at_k_match_independent_and_harbor_numbers():
    rep = build_report(JOB, [TASKS])
    scores = _raw_scores()
    k = 3
    per_attempt = [statistics.fmean(v[a] for v in scores.values()) for a in range(k)]
    assert rep["accuracy"]["per_attempt"] == pytest.approx(per_attempt)
    assert rep["accuracy"]["mean"] == pytest.approx(3 / 9)
    assert rep["accuracy"]["stderr"] == pytest.approx(statistics.stdev(per_attempt) / math.sqrt(k))
    harbor = json.loads((JOB / "result.json").read_text())["stats"]["evals"]
    (harbor_pass,) = [e["pass_at_k"] for e in harbor.values()]
    assert harbor_pass and all(rep["pass_at_k"][k] == pytest.approx(v) for k, v in harbor_pass.items())
    assert rep["pass_at_k"]["1"] == pytest.approx(3 / 9)
    assert rep["pass_at_k"]["3"] == pytest.approx(sum(any(v) for v in scores.values()) / len(scores))
    assert (rep["tasks"], rep["trials"], rep["attempts"]) == (3, 9, 3)
    assert rep["errors"] == {"AgentTimeoutError": 1} and rep["trials_without_reward"] == 1
    assert rep["per_trial_mean"] == {"input_tokens": 24000.0, "output_tokens": 3400.0, "turns": 9.0}


def test_categories_come_from_task_toml():
    rep = build_report(JOB, [TASKS])
    cats = rep["categories"]
    assert {c: (v["tasks"], v["trials"]) for c, v in cats.items()} == {"security": (1, 3),
                                                                        "software-engineering": (2, 6)}
    assert cats["security"]["mean"] == pytest.approx(1 / 3)  # crack-7z-hash: 1, 0, timeout
    assert cats["software-engineering"]["per_attempt"] == pytest.approx([0.5, 0.5, 0.0])
    without = build_report(JOB)  # tasks not found: one visible bucket, nothing dropped
    assert list(without["categories"]) == [UNKNOWN] and without["categories"][UNKNOWN]["trials"] == 9
    text = format_report(rep)
    assert "33.3% ± 19.2" in text and "pass@2 55.6%" in text and "AgentTimeoutError 1" in text


def test_outputs_and_refusals(tmp_path):
    rep = build_report(JOB, [TASKS])
    json_path, png_path = write_outputs(rep, tmp_path)
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(rep))
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    copy = tmp_path / "jobs" / "two"
    shutil.copytree(JOB, copy)
    (copy / "unfinished__x").mkdir()
    (copy / "unfinished__x" / "trial.log").write_text("")
    assert build_report(copy)["unfinished_trials"] == [str(copy / "unfinished__x")]
    other = tmp_path / "jobs" / "one"
    shutil.copytree(JOB, other)
    for res in other.glob("*/result.json"):
        r = json.loads(res.read_text())
        r["agent_info"]["model_info"]["name"] = "another-model"
        res.write_text(json.dumps(r))
    with pytest.raises(UserError, match="different agents/models"):
        build_report(tmp_path / "jobs")
    with pytest.raises(UserError, match="not a Harbor job directory"):
        build_report(TASKS)


@pytest.mark.parametrize("agent, accuracy", [("oracle", 1.0), ("nop", 0.0)])
def test_real_harbor_jobs(agent, accuracy):
    rep = build_report(FIXTURES / "harbor_job" / agent)
    assert rep["accuracy"]["mean"] == accuracy and rep["categories"]  # task.toml found at the trial's path
