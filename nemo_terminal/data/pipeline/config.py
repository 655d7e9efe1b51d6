"""`PrepareConfig`: every decision `nemo-terminal prepare` makes, typed and validated up front.

Loaded through omegaconf (structured dataclass + YAML + `key=value` overrides), so a typo'd
key or a wrong type fails before any record is read. The resolved config is stored in the
dataset manifest; a re-run with an equal config and equal inputs is a no-op.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_terminal.errors import UserError
from nemo_terminal.options import Choice, LengthPolicy, ThinkingPolicy, check_int, check_number
from nemo_terminal.runtime.parallel import ParallelConfig

# Config keys that change how fast prepare runs but never what it writes; left out of the
# "same config?" comparison so a re-run with more workers is still a no-op.
RUNTIME_ONLY_KEYS = ("workers", "chunk_size", "progress", "strict", "min_kept")
# The parallel keys that decide the padding (pp/vpp do not change a dataset's bytes).
PADDING_KEYS = ("tp", "cp", "sequence_parallel")
# Keys of manifests written before `parallel` was embedded, and their names in `parallel`.
LEGACY_PARALLEL_KEYS = {"tp_size": "tp", "cp_size": "cp", "sequence_parallel": "sequence_parallel"}


class BadFilePolicy(Choice):
    """prepare's `on_bad_file`: what an unreadable input file does to the run."""

    stop = "stop"
    skip = "skip"


@dataclass
class FilterConfig:
    """Record filters (FACTS.md §2). Each is a switch; each drop is counted under its reason."""

    decontaminate_file: str | None = None
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
    require_success: bool = False
    """Keep only records whose `reward` column (written by `taskgen collect`) is >= 1: every test
    passed (`unsuccessful`). Off by default: the paper found keeping failures scores higher."""
    min_turns: int | None = None
    """Minimum assistant turns (`too_few_turns`). None = no limit (the paper used none)."""
    max_turns: int | None = None
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
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """The training run's layout, the same block (and keys) as the training config's `parallel`.
    Documents are padded to lcm(2·cp, cp·tp with sequence_parallel); pp and vpp do not matter here.
    CLI aliases: --tp-size, --cp-size, --sequence-parallel."""
    thinking: ThinkingPolicy = ThinkingPolicy.keep
    """keep | strip_history | drop. keep trains every turn's <think> block (matches the
    corpus token counts); strip_history keeps reasoning in the last assistant turn only, as
    Qwen3's template renders history at inference; drop removes all reasoning."""
    length_policy: LengthPolicy = LengthPolicy.truncate_turns
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
    on_bad_file: BadFilePolicy = BadFilePolicy.stop
    """stop | skip, for an input file that cannot be read at all (corrupt parquet, not UTF-8).
    stop (the default) fails naming the file; skip counts it under `bad_files` in the report
    (its records under `unreadable_file`) and goes on with the other inputs."""
    min_kept: float | None = None
    """Fail (exit non-zero, nothing published) when fewer than this fraction of the records read
    are kept. None: fail only when nothing is kept, and warn below half."""
    split: str = "train"
    """The split of a `DatasetDict.save_to_disk` directory to read (the Terminal-Corpus has only
    `train`); a missing split is an error listing the available ones."""
    progress: bool = True
    """Show a progress bar (records/s, tokens/s) when stderr is a terminal."""
    filters: FilterConfig = field(default_factory=FilterConfig)
    """Record filters (decontamination, identity leaks, Chinese, completeness, turns, dedup)."""

    def __post_init__(self) -> None:
        self.thinking = ThinkingPolicy.parse(self.thinking, "thinking")
        self.length_policy = LengthPolicy.parse(self.length_policy, "length_policy")
        for name in ("seq_length", "shuffle_window", "workers", "chunk_size"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        check_number("fraction", self.fraction, low=0, high=1, low_open=True, fix="1 keeps every record")
        check_number("min_kept", self.min_kept, low=0, high=1, optional=True, fix="e.g. 0.5; null to only warn")
        self.on_bad_file = BadFilePolicy.parse(self.on_bad_file, "on_bad_file")
        if not isinstance(self.split, str) or not self.split:
            raise UserError(f"split must be a split name such as 'train', got {self.split!r}")
        if isinstance(self.filters, dict):  # built directly with a dict (not via omegaconf)
            self.filters = FilterConfig(**self.filters)
        if isinstance(self.parallel, dict):
            self.parallel = ParallelConfig(**self.parallel)
        multiple = self.pad_multiple()
        if self.seq_length % multiple:
            p = self.parallel
            raise UserError(
                f"seq_length={self.seq_length} is not a multiple of the pad multiple {multiple} "
                f"(parallel.cp={p.cp}, parallel.tp={p.tp}, parallel.sequence_parallel={p.sequence_parallel}); "
                f"use e.g. seq_length={self.seq_length // multiple * multiple or multiple}"
            )

    def pad_multiple(self) -> int:
        """lcm(2·cp, cp·tp if SP): derived from the layout, never hand-set."""
        return self.parallel.pad_multiple()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def identity_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a stored config (any version's manifest) that decides the output bytes:
    runtime-only keys dropped, the layout reduced to the keys that set the padding."""
    out = {k: v for k, v in config.items() if k not in RUNTIME_ONLY_KEYS and k not in LEGACY_PARALLEL_KEYS}
    parallel = dict(config.get("parallel") or {})
    for old, new in LEGACY_PARALLEL_KEYS.items():  # manifests from before `parallel` was embedded
        if old in config:
            parallel[new] = config[old]
    defaults = dataclasses.asdict(ParallelConfig())
    out["parallel"] = {k: parallel.get(k, defaults[k]) for k in PADDING_KEYS}
    if not out["parallel"]["tp"] or int(out["parallel"]["tp"]) == 1:
        out["parallel"]["sequence_parallel"] = False  # a no-op at tp=1, as ParallelConfig normalises it
    return out


def load_prepare_config(path: str | None = None, overrides: list[str] | None = None,
                        **explicit: Any) -> PrepareConfig:
    """Defaults < YAML file < `key=value` overrides < explicit (non-None) keyword values."""
    from nemo_terminal.configuration import load_structured  # lazy: omegaconf, 0.06 s; prepare workers load config

    return load_structured(PrepareConfig, path, overrides, explicit)
