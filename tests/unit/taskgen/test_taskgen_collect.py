"""`taskgen collect`: a Harbor job directory -> Terminal-Corpus records -> `prepare`, unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from taskgen_cases import HARBOR_JOB

from nemo_terminal.cli import main
from nemo_terminal.harbor.jobs import find_jobs, read_job
from nemo_terminal.models.chat import join_reasoning

TRAJ = HARBOR_JOB / "count-errors__t1-solved" / "agent" / "trajectory.json"
# Jobs of a real `harbor run` in Docker on this machine (oracle, nop, terminus-2 with and without
# raw_content), committed by tests/system/test_harbor_docker.py.
REAL_JOBS = Path(__file__).resolve().parents[2] / "fixtures" / "harbor_job"


def _collect(tmp_path: Path, *jobs: Path) -> tuple[list[dict], dict]:
    out = tmp_path / "trajectories.jsonl"
    assert main(["taskgen", "collect", *map(str, jobs), "--out", str(out)]) == 0
    return [json.loads(x) for x in out.read_text().splitlines()], {}


def test_job_reader_follows_harbor_layout():
    job = read_job(HARBOR_JOB)
    assert [t.trial_name.split("__")[1] for t in job.trials] == [
        "t1-solved", "t2-parse-error", "t3-all-messages", "t4-structured", "t5-no-agent"]
    assert [p.name.split("__")[1] for p in job.unfinished] == ["t6-running"]
    t1, t2, *_ = job.trials
    assert (t1.reward, t2.reward, job.trials[4].reward) == (1.0, 0.0, None)
    assert t1.task_name == "count-errors" and t1.agent == "terminus-2" and t1.model == "deepseek-v3.2"
    assert (t1.n_input_tokens, t1.n_output_tokens, t1.n_turns) == (1000, 100, 3)
    assert t2.exception_type == "AgentTimeoutError" and t1.exception_type is None
    assert find_jobs(HARBOR_JOB) == [HARBOR_JOB] and find_jobs(HARBOR_JOB.parent) == [HARBOR_JOB]


def test_records_in_terminal_corpus_schema(tmp_path):
    records, _ = _collect(tmp_path, HARBOR_JOB)
    assert [r["trial_name"].split("__")[1] for r in records] == ["t1-solved", "t2-parse-error", "t3-all-messages"]
    steps = json.loads(TRAJ.read_text())["steps"]
    t1 = records[0]
    assert set(t1) >= {"conversations", "agent", "model", "task", "episode", "run_id", "trial_name",
                       "enable_thinking", "reward"}
    turns = t1["conversations"]
    assert [t["role"] for t in turns] == ["user", "assistant"] * 3
    assert turns[0]["content"] == steps[0]["message"] and "Task Description:\nCount the lines" in turns[0]["content"]
    assert turns[1]["content"] == join_reasoning(steps[1]["reasoning_content"], steps[1]["message"])
    assert turns[1]["content"].startswith("<think>\nThe log is in /app/data.")
    assert '\n</think>\n\n{\n  "analysis"' in turns[1]["content"]
    assert turns[2]["content"] == steps[1]["observation"]["results"][0]["content"]
    assert turns[-1]["content"].endswith('"task_complete": true\n}')  # the confirmation turn ends it
    assert (t1["episode"], t1["run_id"], t1["enable_thinking"], t1["reward"]) == ("episode-2", "harbor_job", True, 1.0)
    t2 = records[1]
    assert t2["conversations"][2]["content"].startswith("Previous response had parsing errors:")
    assert (t2["episode"], t2["reward"], t2["exception"], t2["enable_thinking"]) == (
        "episode-1", 0.0, "AgentTimeoutError", False)
    # store_all_messages: the chat from result.json, reasoning from the trajectory
    assert records[2]["conversations"] == t1["conversations"]


def test_structured_trajectories_are_skipped_with_the_fix(tmp_path, capsys):
    _collect(tmp_path, HARBOR_JOB)
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped"] == {"no_trajectory": 1, "unreadable_trajectory": 0, "not_raw": 1, "no_assistant_turn": 0}
    assert summary["records"] == 3 and summary["unfinished_trials"] == 1 and summary["solved"] == 2


def test_jobs_root_and_order_are_deterministic(tmp_path):
    root = tmp_path / "jobs"
    for name in ("2026-01-02__run-b", "2026-01-01__run-a"):
        shutil.copytree(HARBOR_JOB, root / name)
    records, _ = _collect(tmp_path, root)
    assert [r["run_id"] for r in records] == ["2026-01-01__run-a"] * 3 + ["2026-01-02__run-b"] * 3


def test_trials_killed_while_writing_are_skipped_not_fatal(tmp_path, capsys):
    job = tmp_path / "job"
    shutil.copytree(HARBOR_JOB, job)
    traj = job / "count-errors__t1-solved" / "agent" / "trajectory.json"
    traj.write_text(traj.read_text()[:500])  # Terminus-2 rewrites it after every episode
    result = job / "count-errors__t2-parse-error" / "result.json"
    result.write_text(result.read_text()[:300])
    records, _ = _collect(tmp_path, job)
    summary = json.loads(capsys.readouterr().out)
    assert [r["trial_name"].split("__")[1] for r in records] == ["t3-all-messages"]
    assert summary["skipped"]["unreadable_trajectory"] == 1 and summary["unfinished_trials"] == 2


def test_not_a_job_dir_is_one_clear_error(tmp_path, capsys):
    assert main(["taskgen", "collect", str(tmp_path), "--out", str(tmp_path / "x.jsonl")]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: not a Harbor job directory")


def test_inline_and_separate_reasoning_give_the_same_turn():
    """A server with a reasoning parser (reasoning_content) and one without (<think> inline) give
    the same record text, the canonical form training and serving share."""
    from nemo_terminal.harbor.jobs import Message
    from nemo_terminal.taskgen.collect import assistant_text

    separate = assistant_text(Message("assistant", '\n{"a": 1}', "Look first.\n"))
    inline = assistant_text(Message("assistant", '<think>\nLook first.\n</think>\n\n{"a": 1}'))
    assert separate == inline == '<think>\nLook first.\n</think>\n\n{"a": 1}'
    assert assistant_text(Message("assistant", "plain")) == "plain"


def test_collect_a_real_harbor_run(tmp_path, capsys):
    records, _ = _collect(tmp_path, REAL_JOBS)
    summary = json.loads(capsys.readouterr().out)
    # oracle and nop leave no trajectory; plain terminus-2 keeps only Harbor's Analysis/Plan summary
    assert summary["jobs"] == 4
    assert summary["skipped"] == {"no_trajectory": 2, "unreadable_trajectory": 0, "not_raw": 1, "no_assistant_turn": 0}
    [record] = records
    trial = next(p for p in (REAL_JOBS / "terminus-2-raw").iterdir() if p.is_dir())
    steps = json.loads((trial / "agent" / "trajectory.json").read_text())["steps"]
    agent_steps = [s for s in steps if s["source"] == "agent"]
    turns = record["conversations"]
    assert [t["content"] for t in turns[1::2]] == [s["message"] for s in agent_steps]
    assert turns[0]["content"] == steps[0]["message"] and "Task Description:" in turns[0]["content"]
    assert turns[2]["content"] == agent_steps[0]["observation"]["results"][0]["content"]
    assert (record["run_id"], record["trial_name"], record["reward"]) == ("terminus-2-raw", trial.name, 1.0)
    assert record["episode"] == f"episode-{len(agent_steps) - 1}" and record["agent"] == "terminus-2"


def test_collect_then_prepare_round_trip(tmp_path, tokenizer_dir, capsys):
    records, _ = _collect(tmp_path, REAL_JOBS, HARBOR_JOB)
    capsys.readouterr()
    assert len(records) == 4
    data = tmp_path / "dataset"
    args = ["prepare", "--input", str(tmp_path / "trajectories.jsonl"), "--tokenizer", str(tokenizer_dir),
            "--out", str(data), "--seq-length", "4096"]
    assert main(args) == 0
    report = json.loads((data / "report.json").read_text())
    # t3 holds the same chat as t1 (read from result.json instead of the trajectory): prepare's dedup
    assert report["records_in"] == 4 and report["records_kept"] == 3
    assert {k: v for k, v in report["dropped"].items() if v} == {"duplicate": 1}
    assert report["loss_tokens_total"] > 0


def test_prepare_require_success_uses_the_reward(tmp_path, tokenizer_dir, capsys):
    """Opt-in: only trajectories whose tests all passed (reward 1) are kept; off by default."""
    records, _ = _collect(tmp_path, REAL_JOBS, HARBOR_JOB)
    rewards = [r["reward"] for r in records]
    assert rewards == [1.0, 1.0, 0.0, 1.0]  # terminus-2-raw; t1, t2 (failed), t3 (= t1)
    args = ["prepare", "--input", str(tmp_path / "trajectories.jsonl"), "--tokenizer", str(tokenizer_dir),
            "--seq-length", "4096"]
    assert main([*args, "--out", str(tmp_path / "all")]) == 0
    assert main([*args, "--out", str(tmp_path / "ok"), "filters.require_success=true"]) == 0
    everything = json.loads((tmp_path / "all" / "report.json").read_text())
    solved = json.loads((tmp_path / "ok" / "report.json").read_text())
    assert everything["records_kept"] == 3 and everything["dropped"] == {"duplicate": 1}
    assert solved["records_kept"] == 2 and solved["dropped"] == {"duplicate": 1, "unsuccessful": 1}


def test_require_success_needs_a_reward_column(tmp_path, tokenizer_dir, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"conversations": [[{"role": "user", "content": "hi"},
                                                {"role": "assistant", "content": "ok"}]]}), path)
    args = ["prepare", "--input", str(path), "--tokenizer", str(tokenizer_dir), "--seq-length", "4096",
            "--out", str(tmp_path / "d"), "filters.require_success=true"]
    assert main(args) == 1
    assert capsys.readouterr().err.startswith(f"error: {path}: filters.require_success needs a `reward` column")
