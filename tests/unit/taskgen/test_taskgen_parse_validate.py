"""Reply parsing, the task spec's shape, and the structural checks (each with its own reason)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from nemo_terminal.taskgen.jsonparse import ParseError, extract_object
from nemo_terminal.taskgen.spec import (
    SpecError,
    TaskFile,
    TaskSpec,
    TaskTest,
    json_schema,
    spec_from_json,
)
from nemo_terminal.taskgen.validate import (
    REJECTION_REASONS,
    Limits,
    Rejected,
    check_structure,
)

OBJ = {"instruction": "Sort /app/a.txt.", "domain": "file-operations", "skills": ["x"], "difficulty": "easy",
       "files": [{"path": "a.txt", "content": "b\na\n"}],
       "tests": [{"name": "test_sorted", "weight": 1, "code": "def test_sorted():\n    assert True\n"}]}
TEXT = json.dumps(OBJ, indent=2)


@pytest.mark.parametrize("reply", [
    TEXT,
    f"```json\n{TEXT}\n```",
    f"```\n{TEXT}\n```\nLet me know if you want harder tests.",
    f"Here is the task:\n\n{TEXT}",
    f"{TEXT}\n\nNotes: the tests use {{braces}} sparingly.",
    f"<think>\nThe user wants a task {{with}} files.\n</think>\n\n{TEXT}",
    "Use a {placeholder} style? No. " + TEXT,
])
def test_accepted_reply_shapes(reply):
    assert extract_object(reply) == OBJ


@pytest.mark.parametrize("reply,finish", [
    (TEXT[:-40], "stop"),
    (TEXT[:len(TEXT) // 2], "stop"),  # cut inside a string
    (TEXT, "length"),  # whole-looking, but the server says it stopped at max_tokens
    ("```json\n" + TEXT[:200], "stop"),
    ('{"instruction": "a", "files": [{"path": "x", "content": "y"}', "stop"),  # an inner object is complete
])
def test_truncated_replies_are_rejected_not_repaired(reply, finish):
    with pytest.raises(ParseError) as err:
        extract_object(reply, finish)
    assert err.value.reason == "truncated_json"


@pytest.mark.parametrize("reply", [
    "I cannot help with that.",
    "```json\n{'instruction': 'x'}\n```",
    "[1, 2, 3]",
    '{"instruction": "x",}',
    "",
])
def test_not_json(reply):
    with pytest.raises(ParseError) as err:
        extract_object(reply)
    assert err.value.reason == "not_json"


@pytest.mark.parametrize("change,field", [
    (lambda o: o.pop("tests"), "missing `tests`"),
    (lambda o: o.update(domain="gardening"), "task.domain"),
    (lambda o: o.update(difficulty="trivial"), "task.difficulty"),
    (lambda o: o.update(files={"a.txt": "x"}), "task.files"),
    (lambda o: o["tests"][0].update(weight="1"), "task.tests[0].weight"),
    (lambda o: o["tests"][0].update(weight=True), "task.tests[0].weight"),
    (lambda o: o.update(instruction="  "), "task.instruction"),
])
def test_schema_errors_name_the_field(change, field):
    obj = json.loads(TEXT)
    change(obj)
    with pytest.raises(SpecError, match=field.replace("[", r"\[").replace("]", r"\]")):
        spec_from_json(obj)


def test_json_schema_matches_the_spec_fields():
    schema = json_schema()
    assert schema["required"] == ["instruction", "domain", "skills", "difficulty", "files", "tests"]
    assert len(schema["properties"]["domain"]["enum"]) == 9


SPEC = spec_from_json(OBJ)


def _reason(spec: TaskSpec, limits: Limits | None = None) -> str | None:
    try:
        check_structure(spec, limits or Limits())
    except Rejected as rej:
        assert rej.reason in REJECTION_REASONS
        return rej.reason
    return None


def _with_files(*paths: str) -> TaskSpec:
    return replace(SPEC, files=tuple(TaskFile(p, "x") for p in paths))


def _with_test(name: str, code: str, weight: float = 1.0) -> TaskSpec:
    return replace(SPEC, tests=(TaskTest(name, weight, code),))


def test_valid_spec_passes():
    assert _reason(SPEC) is None
    assert _reason(_with_files("data/in.csv", "./notes.txt", "src/pkg/mod.py")) is None


@pytest.mark.parametrize("paths", [
    ("/etc/passwd",), ("../x",), ("data/../../x",), ("a\\b.txt",), ("C:/x",), ("",),
    ("a.txt", "./a.txt"), ("data", "data/x.csv"), ("data/x.csv", "data"),
])
def test_unsafe_paths(paths):
    assert _reason(_with_files(*paths)) == "unsafe_path"


@pytest.mark.parametrize("weight", [0, -1, float("nan"), float("inf")])
def test_bad_weights(weight):
    assert _reason(_with_test("test_a", "def test_a():\n    pass\n", weight)) == "bad_weight"


@pytest.mark.parametrize("name,code,reason", [
    ("test_a", "def test_a()\n    pass\n", "test_syntax"),
    ("test_a", "def test_a():\n\tpass\n        pass\n", "test_syntax"),
    ("test_a", "def test_a():\n    pass\x00\n", "test_syntax"),
    ("test_a", "def test_b():\n    pass\n", "test_missing_function"),
    ("test_a", "class TestA:\n    def test_a(self):\n        pass\n", "test_missing_function"),
    ("test_a", "def test_a():\n    pass\n\n\ndef test_extra():\n    pass\n", "test_missing_function"),
    ("check_a", "def check_a():\n    pass\n", "schema"),
])
def test_test_code_checks(name, code, reason):
    assert _reason(_with_test(name, code)) == reason


def test_two_tests_with_the_same_function_are_rejected():
    spec = replace(SPEC, tests=(TaskTest("test_a", 1, "def test_a():\n    pass\n"),
                                TaskTest("test_b", 1, "def test_b():\n    pass\n\n\ndef test_a():\n    pass\n")))
    assert _reason(spec) == "test_missing_function"


def test_test_code_is_never_executed(tmp_path):
    marker = tmp_path / "executed"
    code = f"open({str(marker)!r}, 'w').write('ran')\nraise SystemExit(3)\n\n\ndef test_a():\n    pass\n"
    assert _reason(_with_test("test_a", code)) is None
    assert not marker.exists()


def test_size_limits():
    big = replace(SPEC, files=(TaskFile("a.bin", "é" * 600),))  # 1200 bytes in UTF-8
    assert _reason(big, Limits(max_file_bytes=1000)) == "oversized_file"
    two = replace(SPEC, files=(TaskFile("a", "x" * 900), TaskFile("b", "x" * 900)))
    assert _reason(two, Limits(max_file_bytes=1000, max_task_bytes=1500)) == "oversized_task"
    assert _reason(two, Limits(max_file_bytes=1000, max_task_bytes=4000)) is None


def test_paper_filters_come_from_prepare(tmp_path):
    """Same functions as prepare: a benchmark 14-gram, a teacher naming itself, CJK characters."""
    from nemo_terminal.data.pipeline import filters as prepare_filters
    from nemo_terminal.taskgen.filters import TaskFilters

    bench = tmp_path / "bench.txt"
    sentence = ("configure the reverse proxy so that requests to the admin path are rejected "
                "with status four hundred three")
    bench.write_text(sentence + "\n")
    filters = TaskFilters(str(bench))
    assert filters._filter.__class__ is prepare_filters.RecordFilter
    assert filters.reason(SPEC) is None
    assert filters.reason(replace(SPEC, instruction="Please " + sentence + " today.")) == "contaminated"
    assert filters.reason(replace(SPEC, instruction=" ".join(sentence.split()[:13]))) is None  # 13 words: no 14-gram
    assert filters.reason(replace(SPEC, files=(TaskFile("a.txt", "数据"),))) == "chinese_chars"
    leak = replace(SPEC, tests=(TaskTest("test_a", 1, "# written by DeepSeek-V3.2\ndef test_a():\n    pass\n"),))
    assert filters.reason(leak) == "identity_leak"


def test_replies_on_disk_are_the_shapes_models_return():
    """The recorded replies really are in the shapes the issue lists (guards the fixtures)."""
    replies = Path(__file__).parent / "replies"
    assert (replies / "good_bare.txt").read_text().lstrip().startswith("{")
    assert (replies / "good_fenced.txt").read_text().startswith("```json\n")
    prose = (replies / "good_prose.txt").read_text()
    assert prose.rstrip().endswith(".") and "}\n\nThe tests" in prose
    assert not (replies / "truncated_length.txt").read_text().rstrip().endswith("}")
