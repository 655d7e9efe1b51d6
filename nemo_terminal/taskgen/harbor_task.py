"""Write a task spec as a Harbor task directory (the Terminal-Bench / Harbor layout).

    NAME/instruction.md
    NAME/task.toml                      metadata, timeouts, resources; the verifier shares the agent's container
    NAME/environment/Dockerfile         FROM the domain image, COPY files/ into the working directory
    NAME/environment/files/...          the task's input files
    NAME/tests/test.sh                  runs pytest from the working directory
    NAME/tests/test_outputs.py          the generated tests, concatenated
    NAME/tests/weights.json, conftest.py, pytest.ini   the weighted reward -> /logs/verifier/reward.txt

The verifier runs in the agent's container (`environment_mode = "shared"`), as in Terminal-Bench:
the tests check the state the agent left (files, installed packages, permissions), which a separate
verifier container would not see. Directories are written to a temporary name and renamed into
place, so a killed run never leaves a half-written task.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from nemo_terminal.taskgen.resources import read_text, render
from nemo_terminal.taskgen.spec import TaskSpec

WORKDIR = "/app"


@dataclass(frozen=True)
class TaskSettings:
    image: str  # the domain image the task's Dockerfile starts FROM
    agent_timeout_s: float = 1800.0
    verifier_timeout_s: float = 600.0
    build_timeout_s: float = 600.0
    cpus: int = 1
    memory_mb: int = 4096


def toml_value(value: Any) -> str:
    """A TOML literal for str / bool / int / float / list / dict (inline table) values."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):  # JSON string escapes are TOML basic-string escapes, except DEL
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def task_toml(spec: TaskSpec, settings: TaskSettings) -> str:
    meta = {"domain": spec.domain, "difficulty": spec.difficulty, "skills": list(spec.skills), **spec.metadata}
    sections = {
        "metadata": meta,
        "verifier": {"timeout_sec": settings.verifier_timeout_s, "environment_mode": "shared"},
        "agent": {"timeout_sec": settings.agent_timeout_s},
        "environment": {"build_timeout_sec": settings.build_timeout_s, "cpus": settings.cpus,
                        "memory_mb": settings.memory_mb},
    }
    lines = ['schema_version = "1.4"']
    for name, table in sections.items():
        lines += ["", f"[{name}]"] + [f"{json.dumps(k) if not k.isidentifier() else k} = {toml_value(v)}"
                                      for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def dockerfile(spec: TaskSpec, settings: TaskSettings) -> str:
    lines = [f"FROM {settings.image}", f"WORKDIR {WORKDIR}"]
    if spec.files:
        lines.append(f"COPY files/ {WORKDIR}/")
    return "\n".join(lines) + "\n"


def test_module(spec: TaskSpec) -> str:
    head = ('"""Tests of this task, written by the generator model. They run inside the task container\n'
            'only, from the working directory (tests/test.sh); tests/conftest.py weighs them into the reward."""\n')
    return head + "".join(f"\n\n{t.code.strip()}\n" for t in spec.tests)


def _write(path: Path, text: str, executable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if executable:
        path.chmod(0o755)


def write_task(spec: TaskSpec, dest: Path, settings: TaskSettings, adapter_kind: str | None = None) -> Path:
    """Write the task at dest (replacing what is there) and return dest."""
    tmp = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _write(tmp / "instruction.md", spec.instruction.rstrip("\n") + "\n")
    _write(tmp / "task.toml", task_toml(spec, settings))
    _write(tmp / "environment" / "Dockerfile", dockerfile(spec, settings))
    for f in spec.files:
        _write(tmp / "environment" / "files" / PurePosixPath(f.path), f.content)
    tests = tmp / "tests"
    if spec.tests:
        _write(tests / "test.sh", render(read_text("templates", "test.sh"), workdir=WORKDIR), executable=True)
        _write(tests / "test_outputs.py", test_module(spec))
        _write(tests / "weights.json", json.dumps({t.name: t.weight for t in spec.tests}, indent=1) + "\n")
        _write(tests / "conftest.py", read_text("templates", "conftest.py"))
        _write(tests / "pytest.ini", read_text("templates", "pytest.ini"))
    else:
        _write(tests / "test.sh", render(read_text("templates", "test_no_tests.sh"), kind=adapter_kind or "adapter"),
               executable=True)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest
