"""Counting what prepare keeps and drops, and why: the data behind report.json.

Every record read ends up in exactly one place: kept, dropped under a reason, or subsampled out
by `fraction`; the report states totals and the same split per input file.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from nemo_terminal.data.pipeline.filters import FILTER_REASONS
from nemo_terminal.models.chat import LENGTH_REASONS
from nemo_terminal.data.pipeline.validate import VALIDATION_REASONS

ALL_REASONS = {**VALIDATION_REASONS, **FILTER_REASONS, **LENGTH_REASONS}


def _file_counts() -> dict[str, Any]:
    return {"records_in": 0, "records_kept": 0, "subsampled_out": 0, "truncated": 0,
            "tokens": 0, "loss_tokens": 0, "dropped": Counter()}


class Accounting:
    """Running totals; `report()` turns them into the report.json dict."""

    def __init__(self, paths: list[str]):
        self.paths = paths
        self.files = [_file_counts() for _ in paths]
        self.turns_hist: Counter = Counter()
        self.padding_tokens = 0
        self.tokens_cut = 0  # tokens removed by truncation
        self.bins = 0
        self.bin_real_tokens = 0

    def read(self, file_index: int) -> None:
        self.files[file_index]["records_in"] += 1

    def subsampled(self, file_index: int) -> None:
        self.files[file_index]["subsampled_out"] += 1

    def drop(self, file_index: int, reason: str) -> None:
        assert reason in ALL_REASONS, f"undocumented drop reason {reason!r}"
        self.files[file_index]["dropped"][reason] += 1

    def keep(self, file_index: int, length: int, padded: int, loss_tokens: int, turns: int,
             truncated: bool, full_length: int) -> None:
        f = self.files[file_index]
        f["records_kept"] += 1
        f["tokens"] += length
        f["loss_tokens"] += loss_tokens
        f["truncated"] += int(truncated)
        self.padding_tokens += padded - length
        self.tokens_cut += full_length - length
        self.turns_hist[turns] += 1

    def add_bin(self, real_tokens: int) -> None:
        self.bins += 1
        self.bin_real_tokens += real_tokens

    def total(self, key: str) -> int:
        return sum(f[key] for f in self.files)

    def report(self, seq_length: int, extra: dict[str, Any]) -> dict[str, Any]:
        dropped: Counter = Counter()
        for f in self.files:
            dropped.update(f["dropped"])
        tokens = self.total("tokens")
        assert tokens == self.bin_real_tokens, "every kept document is in exactly one bin"
        per_file = {p: {**f, "dropped": dict(sorted(f["dropped"].items()))} for p, f in zip(self.paths, self.files)}
        for f in per_file.values():
            assert f["records_in"] == f["records_kept"] + f["subsampled_out"] + sum(f["dropped"].values())
        return {
            "records_in": self.total("records_in"),
            "records_kept": self.total("records_kept"),
            "subsampled_out": self.total("subsampled_out"),
            "dropped": dict(sorted(dropped.items())),
            "dropped_total": sum(dropped.values()),
            "truncated": self.total("truncated"),
            "tokens_removed_by_truncation": self.tokens_cut,
            "tokens_total": tokens,
            "loss_tokens_total": self.total("loss_tokens"),
            "padding_tokens": self.padding_tokens,
            "bins": self.bins,
            "seq_length": seq_length,
            "packing_efficiency": tokens / (self.bins * seq_length) if self.bins else 0.0,
            "assistant_turns_histogram": {str(k): v for k, v in sorted(self.turns_hist.items())},
            "per_file": per_file,
            "reason_legend": {r: ALL_REASONS[r] for r in sorted(dropped)},
            **extra,
        }
