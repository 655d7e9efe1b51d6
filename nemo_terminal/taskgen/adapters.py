"""`taskgen adapt`: math / code / SWE prompts -> Harbor tasks, with no LLM and no tests (paper §3).

The prompt becomes the task instruction with a suffix per kind (prompts/adapter_<kind>.md), which
Terminus-2 then wraps in its agent prompt. SWE records carry the repository files they need
(`{repo, problem_statement, files: {path: content}}`); those files are created in the task's
environment, so nothing is fetched when the image is built.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nemo_terminal.errors import UserError
from nemo_terminal.taskgen.envs import DEFAULT_IMAGE_PREFIX, image_name
from nemo_terminal.taskgen.harbor_task import WORKDIR, TaskSettings, write_task
from nemo_terminal.taskgen.resources import prompt
from nemo_terminal.taskgen.spec import TaskFile, TaskSpec
from nemo_terminal.taskgen.validate import Limits, Rejected, check_structure

KINDS = ("math", "code", "swe")
DEFAULT_DOMAINS = {"math": "scientific-computing", "code": "software-engineering", "swe": "software-engineering"}
# Field holding the prompt, in the order tried (OpenMathReasoning: problem; OpenCodeReasoning: input).
PROMPT_FIELDS = {"math": ("problem", "question", "prompt"), "code": ("input", "problem", "question", "prompt"),
                 "swe": ("problem_statement",)}


def read_records(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file."""
    try:
        f = open(path, encoding="utf-8")
    except OSError as err:
        raise UserError(f"--input {path}: {err.strerror}") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise UserError(f"{path}:{lineno}: not JSON ({err.msg})") from None
                if not isinstance(obj, dict):
                    raise UserError(f"{path}:{lineno}: expected a JSON object")
                yield lineno, obj


def _prompt_text(kind: str, record: dict[str, Any], where: str) -> str:
    for key in PROMPT_FIELDS[kind]:
        if isinstance(record.get(key), str) and record[key].strip():
            return record[key].strip()
    raise UserError(f"{where}: no non-empty string field {' / '.join(PROMPT_FIELDS[kind])}")


def adapt_record(kind: str, record: dict[str, Any], where: str, domain: str) -> TaskSpec:
    """One record as a task spec (UserError naming `where` when a required field is missing)."""
    text = _prompt_text(kind, record, where)
    files: tuple[TaskFile, ...] = ()
    suffix_values = {"workdir": WORKDIR}
    if kind == "swe":
        repo, raw_files = record.get("repo"), record.get("files")
        if not isinstance(repo, str) or not repo.strip():
            raise UserError(f"{where}: field `repo` must be a non-empty string")
        if not isinstance(raw_files, dict) or not all(isinstance(v, str) for v in raw_files.values()):
            raise UserError(f"{where}: field `files` must be an object of path -> file content")
        files = tuple(TaskFile(str(p), c) for p, c in sorted(raw_files.items()))
        suffix_values["repo"] = repo
    instruction = text + prompt(f"adapter_{kind}", **suffix_values)
    meta = {"source": f"nemo-terminal taskgen adapt {kind}", "adapter": kind}
    for key in ("id", "repo", "instance_id"):
        if isinstance(record.get(key), (str, int)):
            meta[key] = str(record[key])
    return TaskSpec(instruction, domain, (), "medium", files, (), meta)


def adapt(input_path: str, kind: str, out: Path, domain: str | None = None,
          image_prefix: str = DEFAULT_IMAGE_PREFIX, limits: Limits | None = None) -> dict[str, Any]:
    """Write OUT/tasks/<kind>-NNNNNN for each record; report.json counts accepted and rejected."""
    if kind not in KINDS:
        raise UserError(f"--kind must be one of {KINDS}, got {kind!r}")
    domain = domain or DEFAULT_DOMAINS[kind]
    limits = limits or Limits()
    settings = TaskSettings(image=image_name(domain, image_prefix))
    staging, final = out / ".tasks.partial", out / "tasks"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    accepted, rejected, records = [], {"unsafe_path": 0, "oversized_file": 0, "oversized_task": 0}, 0
    rows = tqdm(read_records(input_path), unit="task", desc=f"adapt {kind}", disable=None)
    for index, (lineno, record) in enumerate(rows):
        records += 1
        spec = adapt_record(kind, record, f"{input_path}:{lineno}", domain)
        try:
            check_structure(spec, limits, require_tests=False)
        except Rejected as rej:
            rejected[rej.reason] += 1
            continue
        name = f"{kind}-{index:06d}"
        write_task(spec, staging / name, settings, adapter_kind=kind)
        accepted.append(name)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    report = {"kind": kind, "domain": domain, "records": records,
              "accepted": len(accepted), "rejected": rejected, "tasks": accepted}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
