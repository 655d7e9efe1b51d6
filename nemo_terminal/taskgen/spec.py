"""The task spec: the one JSON object a generator returns, and an adapter builds.

`instruction, domain, skills, difficulty, files[{path, content}], tests[{name, weight, code}]`.
`spec_from_json` checks the *shape* only (types, required fields, known domain and difficulty);
what the values mean (paths, weights, test code, filters) is checked in `validate.py`, so every
rejection has its own reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nemo_terminal.taskgen.resources import domains

DIFFICULTIES = ("easy", "medium", "hard")


@dataclass(frozen=True)
class TaskFile:
    path: str  # relative to the task's working directory
    content: str


@dataclass(frozen=True)
class TaskTest:
    name: str  # a pytest function name
    weight: float  # its share of the reward
    code: str  # Python source defining `name`


@dataclass(frozen=True)
class TaskSpec:
    instruction: str
    domain: str
    skills: tuple[str, ...] = ()
    difficulty: str = "medium"
    files: tuple[TaskFile, ...] = ()
    tests: tuple[TaskTest, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)  # provenance, written to task.toml

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("metadata")
        return d


class SpecError(ValueError):
    """The object does not have the task spec's shape (counted as `schema`)."""


def json_schema() -> dict[str, Any]:
    """The spec as JSON Schema, sent as `response_format` where the server supports it."""
    string = {"type": "string"}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["instruction", "domain", "skills", "difficulty", "files", "tests"],
        "properties": {
            "instruction": string,
            "domain": {"type": "string", "enum": domains()},
            "skills": {"type": "array", "items": string},
            "difficulty": {"type": "string", "enum": list(DIFFICULTIES)},
            "files": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["path", "content"],
                "properties": {"path": string, "content": string}}},
            "tests": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["name", "weight", "code"],
                "properties": {"name": string, "weight": {"type": "number"}, "code": string}}},
        },
    }


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise SpecError(f"{where}: missing `{key}`")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise SpecError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def spec_from_json(obj: Any) -> TaskSpec:
    """A TaskSpec from a decoded JSON object, or SpecError naming the field."""
    if not isinstance(obj, dict):
        raise SpecError(f"expected an object, got {type(obj).__name__}")
    instruction = _field(obj, "instruction", str, "task")
    if not instruction.strip():
        raise SpecError("task.instruction: empty")
    domain = _field(obj, "domain", str, "task")
    if domain not in domains():
        raise SpecError(f"task.domain: {domain!r} is not one of {domains()}")
    skills = _field(obj, "skills", list, "task")
    if not all(isinstance(s, str) for s in skills):
        raise SpecError("task.skills: expected a list of strings")
    difficulty = _field(obj, "difficulty", str, "task")
    if difficulty not in DIFFICULTIES:
        raise SpecError(f"task.difficulty: {difficulty!r} is not one of {list(DIFFICULTIES)}")
    files = []
    for i, f in enumerate(_field(obj, "files", list, "task")):
        if not isinstance(f, dict):
            raise SpecError(f"task.files[{i}]: expected an object")
        where = f"task.files[{i}]"
        files.append(TaskFile(_field(f, "path", str, where), _field(f, "content", str, where)))
    tests = []
    for i, t in enumerate(_field(obj, "tests", list, "task")):
        if not isinstance(t, dict):
            raise SpecError(f"task.tests[{i}]: expected an object")
        tests.append(TaskTest(_field(t, "name", str, f"task.tests[{i}]"),
                              float(_field(t, "weight", (int, float), f"task.tests[{i}]")),
                              _field(t, "code", str, f"task.tests[{i}]")))
    return TaskSpec(instruction, domain, tuple(skills), difficulty, tuple(files), tuple(tests))
