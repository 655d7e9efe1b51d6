"""`taskgen adapt`: math, code and SWE samples become tasks whose instructions carry the prompts."""

from __future__ import annotations

import json
import os

import tomllib
from taskgen_cases import DATA

from nemo_terminal.cli import main
from nemo_terminal.taskgen.resources import read_text

ADAPTERS = DATA / "adapters"


def _rows(name: str) -> list[dict]:
    return [json.loads(x) for x in (ADAPTERS / name).read_text().splitlines()]


def _run(kind: str, out) -> dict:
    args = ["taskgen", "adapt", "--input", str(ADAPTERS / f"{kind}.jsonl"), "--kind", kind, "--out", str(out)]
    assert main(args) == 0
    return json.loads((out / "report.json").read_text())


def test_math(tmp_path):
    report = _run("math", tmp_path)
    assert report["accepted"] == 2 and report["records"] == 2
    for i, row in enumerate(_rows("math.jsonl")):
        task = tmp_path / "tasks" / f"math-{i:06d}"
        instruction = (task / "instruction.md").read_text()
        assert instruction.startswith(row["problem"]) and "/app/answer.txt" in instruction
        assert row["expected_answer"] not in instruction.replace(row["problem"], "")
        meta = tomllib.loads((task / "task.toml").read_text())["metadata"]
        assert meta["adapter"] == "math" and meta["id"] == row["id"] and meta["domain"] == "scientific-computing"
        dockerfile = (task / "environment" / "Dockerfile").read_text()
        assert dockerfile == "FROM nemo-terminal/scientific-computing:1\nWORKDIR /app\n"
        test_sh = (task / "tests" / "test.sh").read_text()
        assert "echo 0 > /logs/verifier/reward.txt" in test_sh and not (task / "tests" / "test_outputs.py").exists()
        assert os.access(task / "tests" / "test.sh", os.X_OK)


def test_code(tmp_path):
    _run("code", tmp_path)
    instruction = (tmp_path / "tasks" / "code-000000" / "instruction.md").read_text()
    row = _rows("code.jsonl")[0]
    suffix = read_text("prompts", "adapter_code.md").replace("{{workdir}}", "/app")
    assert instruction == row["input"] + suffix.rstrip("\n") + "\n"


def test_swe_embeds_the_repository_and_counts_escaping_paths(tmp_path):
    report = _run("swe", tmp_path)
    assert report["accepted"] == 1 and report["rejected"]["unsafe_path"] == 1
    task = tmp_path / "tasks" / "swe-000000"
    row = _rows("swe.jsonl")[0]
    for path, content in row["files"].items():
        assert (task / "environment" / "files" / path).read_text() == content
    assert "COPY files/ /app/" in (task / "environment" / "Dockerfile").read_text()
    instruction = (task / "instruction.md").read_text()
    assert instruction.startswith(row["problem_statement"])
    assert "`acme/tinyjson` is checked out at `/app`" in instruction
    assert tomllib.loads((task / "task.toml").read_text())["metadata"]["instance_id"] == "acme__tinyjson-42"
    assert not (tmp_path / "tasks" / "swe-000001").exists() and not list(tmp_path.rglob("profile.d"))


def test_missing_field_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"repo": "a/b", "problem_statement": "x"}) + "\n")
    assert main(["taskgen", "adapt", "--input", str(bad), "--kind", "swe", "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {bad}:1: field `files` must be an object of path -> file content"
