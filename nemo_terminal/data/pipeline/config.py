"""`PrepareConfig`: every decision `nemo-terminal prepare` makes, typed and validated up front.

Loaded through omegaconf (structured dataclass + YAML + `key=value` overrides), so a typo'd
key or a wrong type fails before any record is read. The resolved config is stored in the
dataset manifest; a re-run with an equal config and equal inputs is a no-op.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from nemo_terminal.errors import UserError

THINKING_POLICIES = ("keep", "strip_history", "drop")
LENGTH_POLICIES = ("truncate_turns", "truncate", "drop")
# Config keys that change how fast prepare runs but never what it writes; left out of the
# "same config?" comparison so a re-run with more workers is still a no-op.
RUNTIME_ONLY_KEYS = ("workers", "chunk_size", "progress", "strict")


@dataclass
class FilterConfig:
    """Record filters (FACTS.md §2). Each is a switch; each drop is counted under its reason."""

    decontaminate_file: Optional[str] = None
    """Benchmark task instructions (.txt: blank-line separated; .json: list of strings;
    .jsonl: strings or objects with "instruction"). A record whose first user turn shares an
    n-gram with any of them is dropped as `contaminated`. None disables the check."""
    decontaminate_ngram: int = 14
    """n-gram size in words, after lowercasing and whitespace normalisation (paper: 14)."""
    identity_leak: bool = True
    """Drop records whose assistant turns match a teacher-identity pattern (`identity_leak`)."""
    identity_patterns_extra: list[str] = field(default_factory=list)
    """Extra case-insensitive regexes appended to the built-in identity list."""
    chinese: bool = True
    """Drop records with CJK ideographs in assistant turns (`chinese_chars`), as the paper does."""
    require_complete: bool = False
    """Keep only trajectories whose last assistant turn says "task_complete": true. Off by
    default: the paper found keeping incomplete trajectories scores higher."""
    min_turns: Optional[int] = None
    """Minimum assistant turns (`too_few_turns`). None = no limit (the paper used none)."""
    max_turns: Optional[int] = None
    """Maximum assistant turns (`too_many_turns`). None = no limit."""
    dedup: bool = True
    """Drop exact repeats of a conversation (`duplicate`), keyed by a hash of roles + contents."""

    def __post_init__(self) -> None:
        if self.decontaminate_ngram < 1:
            raise UserError(f"filters.decontaminate_ngram must be >= 1, got {self.decontaminate_ngram}")
        for name in ("min_turns", "max_turns"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"filters.{name} must be >= 1 or null, got {value}")
        if self.min_turns and self.max_turns and self.min_turns > self.max_turns:
            raise UserError(f"filters.min_turns={self.min_turns} > filters.max_turns={self.max_turns}")
        if self.decontaminate_file is not None and not Path(self.decontaminate_file).is_file():
            raise UserError(f"filters.decontaminate_file: {self.decontaminate_file} is not a file")
        import re

        for pattern in self.identity_patterns_extra:
            try:
                re.compile(pattern)
            except re.error as err:
                raise UserError(f"filters.identity_patterns_extra: bad regex {pattern!r}: {err}") from None


@dataclass
class PrepareConfig:
    """How trajectories become packed, loss-masked bins."""

    seq_length: int = 32768
    """Bin size in tokens (paper: 32,768). Must be a multiple of the pad multiple."""
    tp_size: int = 1
    """Tensor parallel size of the training run; with sequence_parallel it sets the pad multiple."""
    cp_size: int = 1
    """Context parallel size of the training run: documents are padded to a multiple of 2·cp."""
    sequence_parallel: bool = False
    """Sequence parallelism in the training run: documents padded to a multiple of cp·tp too."""
    thinking: str = "keep"
    """keep | strip_history | drop. keep trains every turn's <think> block (matches the
    corpus token counts); strip_history keeps reasoning in the last assistant turn only, as
    Qwen3's template renders history at inference; drop removes all reasoning."""
    length_policy: str = "truncate_turns"
    """truncate_turns | truncate | drop, for trajectories longer than seq_length.
    truncate_turns keeps the longest prefix ending on a whole assistant turn."""
    shuffle_window: int = 2000
    """Documents packed together (first-fit-decreasing); the bins of a window are written in a
    seeded random order. Larger packs tighter but holds more documents in memory."""
    seed: int = 1234
    """Seeds the bin order within each window and the `fraction` subsample."""
    fraction: float = 1.0
    """Keep this fraction of every input file's records (deterministic by seed, file, index);
    the paper's data-scaling runs use 0.01..1."""
    workers: int = 1
    """Tokenizer processes. 1 tokenizes in the main process. Output is identical for any value."""
    chunk_size: int = 16
    """Records per worker task."""
    strict: bool = False
    """Fail on the first invalid record (naming file and index) instead of counting it."""
    progress: bool = True
    """Show a progress bar (records/s, tokens/s) when stderr is a terminal."""
    filters: FilterConfig = field(default_factory=FilterConfig)

    def __post_init__(self) -> None:
        from nemo_terminal.runtime.parallel import ParallelConfig

        if self.thinking not in THINKING_POLICIES:
            raise UserError(f"thinking must be one of {THINKING_POLICIES}, got {self.thinking!r}")
        if self.length_policy not in LENGTH_POLICIES:
            raise UserError(f"length_policy must be one of {LENGTH_POLICIES}, got {self.length_policy!r}")
        for name in ("seq_length", "shuffle_window", "workers", "chunk_size"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.fraction <= 1.0:
            raise UserError(f"fraction must be in (0, 1], got {self.fraction}")
        multiple = self.pad_multiple()
        if self.seq_length % multiple:
            raise UserError(
                f"seq_length={self.seq_length} is not a multiple of the pad multiple {multiple} "
                f"(cp={self.cp_size}, tp={self.tp_size}, sequence_parallel={self.sequence_parallel}); "
                f"use e.g. seq_length={self.seq_length // multiple * multiple or multiple}"
            )
        if isinstance(self.filters, dict):  # built directly with a dict (not via omegaconf)
            self.filters = FilterConfig(**self.filters)
        ParallelConfig(tp=self.tp_size, cp=self.cp_size, sequence_parallel=self.sequence_parallel)

    def pad_multiple(self) -> int:
        """lcm(2·cp, cp·tp if SP): derived from the layout, never hand-set."""
        from nemo_terminal.runtime.parallel import ParallelConfig

        return ParallelConfig(tp=self.tp_size, cp=self.cp_size, sequence_parallel=self.sequence_parallel).pad_multiple()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def output_identity(self) -> dict[str, Any]:
        """The part of the config that decides the output bytes."""
        d = self.to_dict()
        for key in RUNTIME_ONLY_KEYS:
            d.pop(key, None)
        return d


def load_prepare_config(path: Optional[str] = None, overrides: Optional[list[str]] = None,
                        **explicit: Any) -> PrepareConfig:
    """Defaults < YAML file < `key=value` overrides < explicit (non-None) keyword values."""
    from nemo_terminal.configuration import load_structured

    return load_structured(PrepareConfig, path, overrides, explicit)
