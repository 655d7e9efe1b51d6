"""The paper's record filters applied to generated tasks, shared with `prepare` (not re-implemented).

A task is shown to `RecordFilter` as a two-turn record: the instruction as the first user turn
(what decontamination compares with benchmark instructions, as in `prepare`) and everything the
generator wrote as the answer (what the identity and Chinese-character filters read).
"""

from __future__ import annotations

from nemo_terminal.data.pipeline.config import FilterConfig
from nemo_terminal.data.pipeline.filters import RecordFilter, build_benchmark_index
from nemo_terminal.taskgen.spec import TaskSpec


def generated_text(spec: TaskSpec) -> str:
    """Every string the generator wrote, in spec order."""
    parts = [spec.instruction, *spec.skills]
    parts += [x for f in spec.files for x in (f.path, f.content)]
    parts += [x for t in spec.tests for x in (t.name, t.code)]
    return "\n".join(parts)


class TaskFilters:
    """Decontamination (word n-grams vs --decontaminate-file), identity leaks, Chinese characters."""

    def __init__(self, decontaminate_file: str | None = None, ngram: int = 14):
        cfg = FilterConfig(decontaminate_file=decontaminate_file, decontaminate_ngram=ngram)
        index = build_benchmark_index(decontaminate_file, ngram) if decontaminate_file else None
        self._filter = RecordFilter(cfg, index)

    def reason(self, spec: TaskSpec) -> str | None:
        """`chinese_chars`, `identity_leak`, `contaminated` or None."""
        return self._filter.check([("user", spec.instruction), ("assistant", generated_text(spec))])
