"""Structural validation of a task spec: each failure is one named, counted rejection reason.

LLM-written test code is never executed here: it is `compile()`d and read with `ast` only. It
runs inside the task's container, where the damage a bad test can do is bounded.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from nemo_terminal.taskgen.spec import TaskSpec

# reason -> what it means; report.json counts every reason, in this order.
REJECTION_REASONS = {
    "request_failed": "the endpoint failed after all retries (not cached: a re-run asks again)",
    "truncated_json": "the reply ends inside the JSON object (max_tokens reached)",
    "not_json": "no JSON object in the reply",
    "schema": "the object does not have the task spec's fields and types",
    "unsafe_path": "a file path is absolute, contains '..' or a backslash, or collides with another",
    "bad_weight": "a test weight is not a positive finite number",
    "test_syntax": "test code does not compile",
    "test_missing_function": "test code does not define exactly the named test functions",
    "oversized_file": "a file is larger than the per-file limit",
    "oversized_task": "instruction + files + tests are larger than the per-task limit",
    "chinese_chars": "the task contains CJK ideographs (paper filter, shared with prepare)",
    "identity_leak": "the task names the teacher model (paper filter, shared with prepare)",
    "contaminated": "the instruction shares an n-gram with a benchmark instruction (shared with prepare)",
    "near_duplicate": "the instruction is a near-duplicate (MinHash Jaccard) of an earlier accepted one",
}
_TEST_NAME = re.compile(r"^test_\w*$")


class Rejected(Exception):
    """A rejection with its reason (a key of REJECTION_REASONS) and a one-line detail."""

    def __init__(self, reason: str, detail: str):
        assert reason in REJECTION_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 1 << 20
    max_task_bytes: int = 10 << 20


def check_paths(spec: TaskSpec) -> None:
    """Paths stay inside the working directory and name distinct files."""
    seen: set[PurePosixPath] = set()
    for f in spec.files:
        p = f.path
        if not p.strip() or "\\" in p or "\x00" in p or p.startswith("/") or re.match(r"^[A-Za-z]:", p):
            raise Rejected("unsafe_path", f"{p!r} is empty, absolute or uses backslashes")
        parts = PurePosixPath(p).parts
        if ".." in parts:
            raise Rejected("unsafe_path", f"{p!r} escapes the working directory")
        norm = PurePosixPath(*[x for x in parts if x != "."])
        if norm in seen or any(norm in s.parents or s in norm.parents for s in seen):
            raise Rejected("unsafe_path", f"{p!r} collides with another file (same path or file-as-directory)")
        seen.add(norm)


def check_tests(spec: TaskSpec) -> None:
    """Positive weights; each code compiles and, together, they define exactly the named tests."""
    if not spec.tests:
        raise Rejected("schema", "task.tests: empty")
    names = [t.name for t in spec.tests]
    for t in spec.tests:
        if not _TEST_NAME.match(t.name) or names.count(t.name) > 1:
            raise Rejected("schema", f"test name {t.name!r} is not a unique test_* identifier")
    for t in spec.tests:
        if not (math.isfinite(t.weight) and t.weight > 0):
            raise Rejected("bad_weight", f"{t.name}: weight {t.weight}")
    defined: list[str] = []
    for t in spec.tests:
        try:
            compile(t.code, f"<test {t.name}>", "exec", dont_inherit=True)
            tree = ast.parse(t.code)
        except (SyntaxError, ValueError) as err:
            raise Rejected("test_syntax", f"{t.name}: {type(err).__name__}: {err}") from None
        own = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
               and n.name.startswith("test")]
        if t.name not in own:
            raise Rejected("test_missing_function", f"the code of {t.name} does not define def {t.name}()")
        defined += own
    extra = sorted(set(defined) - set(names))
    if extra or len(defined) != len(names):
        raise Rejected("test_missing_function", f"test code defines unnamed or repeated tests {extra or defined}")


def check_sizes(spec: TaskSpec, limits: Limits) -> None:
    total = len(spec.instruction.encode())
    for f in spec.files:
        size = len(f.content.encode("utf-8", "surrogatepass"))
        if size > limits.max_file_bytes:
            raise Rejected("oversized_file", f"{f.path}: {size} bytes > {limits.max_file_bytes}")
        total += size
    total += sum(len(t.code.encode()) for t in spec.tests)
    if total > limits.max_task_bytes:
        raise Rejected("oversized_task", f"{total} bytes > {limits.max_task_bytes}")


def check_structure(spec: TaskSpec, limits: Limits, require_tests: bool = True) -> None:
    """All structural checks, in REJECTION_REASONS order; raises Rejected on the first failure."""
    check_paths(spec)
    if require_tests:
        check_tests(spec)
    check_sizes(spec, limits)
