"""`taskgen generate` against a loopback OpenAI-compatible server replaying hand-written replies."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import tomllib
from replay_server import ReplayServer
from taskgen_cases import EXPECTED, SEEDS, generate_args

from nemo_terminal.cli import main
from nemo_terminal.taskgen.validate import REJECTION_REASONS

REPO = Path(__file__).resolve().parents[3]
CASES = list(EXPECTED)


def _tree(root: Path, skip: tuple[str, ...] = ("run.json",)) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """One uninterrupted run: (its output directory, the requests the server saw)."""
    out = tmp_path_factory.mktemp("clean") / "gen"
    with ReplayServer() as s:
        assert main(generate_args(s.url, out)) == 0
    return out, s.requests


def test_every_rejection_reason_is_exercised_and_counted(clean):
    out, _ = clean
    report = json.loads((out / "report.json").read_text())
    expected = Counter(r for r in EXPECTED.values() if r)
    assert set(expected) == set(REJECTION_REASONS)  # the replies cover every reason there is
    assert report["rejected"] == {reason: expected[reason] for reason in REJECTION_REASONS}
    assert report["accepted"] == 4 and report["attempts"] == len(CASES)
    names = {r["attempt"]: r["reason"] for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    assert names == {i: r for i, r in enumerate(EXPECTED.values()) if r}
    accepted = sorted(p.name for p in (out / "tasks").iterdir())
    assert accepted == sorted(report["tasks"]) and len(accepted) == 4
    assert accepted[0].startswith("seed-data-processing-000000")
    tokens = report["tokens"]
    assert tokens["prompt"] > 0 and tokens["completion"] > 0
    run = json.loads((out / "run.json").read_text())
    # 21 attempts, + 1 for the 429, + 2 tries of the always-failing case (max_retries=1)
    assert run["requests_sent"] == len(CASES) + 2 and run["retries"] == 2 and run["failed"] == 1
    assert run["cache_hits"] == 0
    assert (run["prompt_tokens"], run["completion_tokens"]) == (tokens["prompt"], tokens["completion"])


def test_accepted_tasks_are_harbor_tasks(clean):
    out, requests = clean
    task = out / "tasks" / "seed-data-processing-000000"
    reply = json.loads((Path(__file__).parent / "replies" / "good_bare.txt").read_text())
    assert (task / "instruction.md").read_text() == reply["instruction"] + "\n"
    config = tomllib.loads((task / "task.toml").read_text())
    assert config["metadata"]["domain"] == "data-processing" and config["metadata"]["seed_id"] == "s00"
    assert config["verifier"]["environment_mode"] == "shared" and config["agent"]["timeout_sec"] > 0
    assert (task / "environment" / "Dockerfile").read_text().splitlines() == [
        "FROM nemo-terminal/data-processing:1", "WORKDIR /app", "COPY files/ /app/"]
    assert (task / "environment" / "files" / "logs" / "access.log").read_text() == reply["files"][0]["content"]
    test_sh = task / "tests" / "test.sh"
    assert os.access(test_sh, os.X_OK) and "/tests/test_outputs.py" in test_sh.read_text()
    weights = json.loads((task / "tests" / "weights.json").read_text())
    assert weights == {t["name"]: t["weight"] for t in reply["tests"]}
    module = (task / "tests" / "test_outputs.py").read_text()
    compile(module, "test_outputs.py", "exec")  # compiled, never run
    for t in reply["tests"]:
        assert f"def {t['name']}(" in module
    assert "/logs/verifier/reward.txt" in (task / "tests" / "conftest.py").read_text()
    # the seed's reference solution reaches the generator (of its own seed only), never the task
    with_solution = [json.dumps(r["body"]["messages"]) for r in requests
                     if "trapezoids between consecutive samples" in json.dumps(r["body"]["messages"])]
    assert len(with_solution) == 1 and "[case:good_prose]" in with_solution[0]
    for path in (out / "tasks").rglob("*"):
        if path.is_file():
            assert "trapezoids between consecutive samples" not in path.read_text()


def test_structured_output_requested_and_fallback_is_identical(clean, tmp_path):
    out, requests = clean
    assert all(r["body"]["response_format"]["type"] == "json_schema" for r in requests)
    assert requests[0]["body"]["response_format"]["json_schema"]["schema"]["required"][0] == "instruction"
    with ReplayServer(reject_response_format=True) as strict:
        assert main(generate_args(strict.url, tmp_path / "b")) == 0
    assert json.loads((tmp_path / "b" / "run.json").read_text())["structured_fallback"] is True
    assert "response_format" not in strict.requests[-1]["body"]
    assert _tree(out / "tasks") == _tree(tmp_path / "b" / "tasks")
    assert (out / "report.json").read_bytes() == (tmp_path / "b" / "report.json").read_bytes()


def test_rerun_costs_nothing(server, tmp_path):
    out = tmp_path / "gen"
    assert main(generate_args(server.url, out)) == 0
    first = _tree(out)
    sent = len(server.requests)
    assert main(generate_args(server.url, out)) == 0
    run = json.loads((out / "run.json").read_text())
    # only the always-failing request is asked again (failures are not cached)
    assert len(server.requests) - sent == 2 and run["cache_hits"] == len(CASES) - 1
    assert run["prompt_tokens"] == run["completion_tokens"] == 0  # the failing request returned no tokens
    assert _tree(out) == first


def test_killed_run_resumes_from_cache_and_ends_identical(clean, tmp_path):
    """Kill the CLI process while its 6th request is in flight, resume, compare with a clean run."""
    killed_at = 6
    proc: list[subprocess.Popen] = []

    def kill_on(count: int) -> None:
        if count == killed_at:
            os.kill(proc[0].pid, signal.SIGKILL)

    out = tmp_path / "resumed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with ReplayServer(before_reply=kill_on) as first:
        proc.append(subprocess.Popen([sys.executable, "-m", "nemo_terminal", *generate_args(first.url, out)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        assert proc[0].wait(timeout=60) == -signal.SIGKILL
    assert not (out / "report.json").exists() and (out / ".tasks.partial").exists()
    cached = sum(1 for _ in (out / "cache").rglob("*.json"))
    assert 0 < cached < killed_at
    with ReplayServer() as second:
        assert main(generate_args(second.url, out)) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["cache_hits"] == cached and len(second.requests) == run["requests_sent"]
    assert not (out / ".tasks.partial").exists()
    assert _tree(out) == _tree(clean[0])  # tasks, report, rejections and cache entries


def test_server_failing_after_k_requests_then_resume(clean, tmp_path):
    """An endpoint that dies mid-run: its attempts are counted as failed; a re-run fills them in."""

    class Dying(ReplayServer):
        def respond(self, path, body):
            if len(self.requests) > 3:
                return self._error(503, "model worker restarting")
            return super().respond(path, body)

    out = tmp_path / "gen"
    with Dying() as dying:
        assert main(generate_args(dying.url, out, "--concurrency", "1")) == 0
    partial = json.loads((out / "report.json").read_text())
    assert partial["rejected"]["request_failed"] > 1 and partial["accepted"] < 4
    with ReplayServer() as healthy:
        assert main(generate_args(healthy.url, out)) == 0
    assert _tree(out) == _tree(clean[0])


def test_api_key_is_sent_and_written_nowhere(tmp_path, monkeypatch, capsys):
    key = "sk-taskgen-SECRET-5f9c2e7a1b"
    monkeypatch.setenv("TEACHER_KEY", key)
    log_file = tmp_path / "debug.log"
    handler = logging.FileHandler(log_file)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        with ReplayServer() as s:
            assert main(generate_args(s.url, tmp_path / "gen", "--api-key-env", "TEACHER_KEY")) == 0
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    assert {r["headers"].get("authorization") for r in s.requests} == {f"Bearer {key}"}
    captured = capsys.readouterr()
    assert log_file.stat().st_size > 0  # debug logging was really on
    for text in (captured.out, captured.err, log_file.read_text()):
        assert key not in text and "SECRET" not in text
    files = [p for p in (tmp_path / "gen").rglob("*") if p.is_file()]
    assert any("cache" in p.parts for p in files)
    for p in files:
        assert key.encode() not in p.read_bytes() and b"SECRET" not in p.read_bytes(), p


def test_skill_mode_is_deterministic_and_spreads_domains(tmp_path):
    from nemo_terminal.taskgen.plan import plan_attempts

    a = plan_attempts("skill", 18, 3, None, "mixed")
    assert a == plan_attempts("skill", 18, 3, None, "mixed")
    assert a != plan_attempts("skill", 18, 4, None, "mixed")
    assert Counter(x.domain for x in a) == Counter({d: 2 for d in {x.domain for x in a}})
    assert len({x.domain for x in a}) == 9
    assert all(3 <= len(x.skills) <= 5 and len(set(x.skills)) == len(x.skills) for x in a)
    assert {x.difficulty for x in a} <= {"easy", "medium", "hard"}


def test_skill_mode_prompt_names_domain_and_skills(tmp_path):
    """The skill prompt carries the domain prompt file and every sampled skill; replies that ignore
    the requested domain still land in the requested domain's image."""
    from nemo_terminal.taskgen.messages import messages
    from nemo_terminal.taskgen.plan import plan_attempts

    attempt = plan_attempts("skill", 5, 11, ["security"], "hard")[4]
    system, user = (m["content"] for m in messages(attempt))
    assert "cryptography" in system and "/app" in system
    assert "Security:" in user and all(f"- {s}" in user for s in attempt.skills) and "hard" in user

    class SkillServer(ReplayServer):
        def respond(self, path, body):
            body["messages"][-1]["content"] += " [case:good_bare]"
            return super().respond(path, body)

    with SkillServer() as s:
        args = ["taskgen", "generate", "--mode", "skill", "--domains", "security", "--num", "1", "--llm-url", s.url,
                "--model", "m", "--out", str(tmp_path / "skill")]
        assert main(args) == 0
    task = next((tmp_path / "skill" / "tasks").iterdir())
    assert task.name == "skill-security-000000"
    assert (task / "environment" / "Dockerfile").read_text().startswith("FROM nemo-terminal/security:1")
    meta = tomllib.loads((task / "task.toml").read_text())["metadata"]
    assert meta["domain"] == "security" and len(meta["skills"]) >= 3


def test_bad_seed_file_is_one_clear_error(tmp_path, capsys):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(SEEDS.read_text().splitlines()[0] + "\n" + '{"domain": "security"}\n')
    args = ["taskgen", "generate", "--mode", "seed", "--seeds", str(seeds), "--num", "2",
            "--llm-url", "http://127.0.0.1:9/v1", "--model", "m", "--out", str(tmp_path / "o")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {seeds}:2: a seed needs a non-empty string field `problem`"]


@pytest.mark.parametrize("status,message", [
    (401, "refused the API key (HTTP 401); set it in the environment variable TEACHER_KEY"),
    (404, "model 'replay-teacher' or the chat completions route was not found (HTTP 404); "
          "check --llm-url (…/v1) and --model"),
])
def test_endpoint_misconfiguration_stops_the_run_with_one_line(tmp_path, monkeypatch, capsys, status, message):
    monkeypatch.setenv("TEACHER_KEY", "sk-wrong-SECRET")

    class Refusing(ReplayServer):
        def respond(self, path, body):
            return self._error(status, "no")

    with Refusing() as s:
        assert main(generate_args(s.url, tmp_path / "gen", "--api-key-env", "TEACHER_KEY")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: http://127.0.0.1:") and err.endswith(message) and "SECRET" not in err
    assert not (tmp_path / "gen" / "report.json").exists()
