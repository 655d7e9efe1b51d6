"""Counting what prepare keeps and drops, and why: the data behind report.json.

Every record read ends up in exactly one place: kept, dropped under a reason, or subsampled out
by `fraction`; the report states totals and the same split per input file.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from nemo_terminal.data.pipeline.filters import FILTER_REASONS
from nemo_terminal.data.pipeline.validate import VALIDATION_REASONS
from nemo_terminal.models.chat import LENGTH_REASONS

ALL_REASONS = {**VALIDATION_REASONS, **FILTER_REASONS, **LENGTH_REASONS}


def _file_counts() -> dict[str, Any]:
    return {"records_in": 0, "records_kept": 0, "subsampled_out": 0, "truncated": 0,
            "tokens": 0, "loss_tokens": 0, "dropped": Counter()}


class Accounting:
    """Running totals; `report()` turns them into the report.json dict."""

    def __init__(self, paths: list[str], origins: list[str] | None = None):
        self.paths = paths
        self.files = [_file_counts() for _ in paths]
        self.origins = origins or []
        self.origin_bins: Counter = Counter()  # origin index -> bins / real tokens
        self.origin_tokens: Counter = Counter()
        self.bad_files: dict[str, str] = {}  # on_bad_file=skip: path -> why it could not be read
        self.turns_hist: Counter = Counter()
        self.padding_tokens = 0
        self.tokens_cut = 0  # tokens removed by truncation
        self.bins = 0
        self.bin_real_tokens = 0
        self.samples = Counter()  # per-turn thinking policies: samples kept/dropped, tokens rendered once

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

    def add_samples(self, kept: int, dropped_too_long: int, once_tokens: int) -> None:
        """One record expanded into per-turn samples (thinking=strip_history/drop)."""
        self.samples.update(kept=kept, dropped_too_long=dropped_too_long, record_tokens_once=once_tokens)

    def _samples_report(self, tokens: int) -> dict[str, Any]:
        """The cost of one sample per assistant turn: tokens written / the same records rendered once."""
        if not self.samples:
            return {}
        once = self.samples["record_tokens_once"]
        return {"per_turn_samples": {**{k: self.samples[k] for k in ("kept", "dropped_too_long")},
                                     "record_tokens_once": once,
                                     "token_multiplier": round(tokens / once, 3) if once else 0.0}}

    def add_bin(self, real_tokens: int, origin: int = 0) -> None:
        self.bins += 1
        self.bin_real_tokens += real_tokens
        self.origin_bins[origin] += 1
        self.origin_tokens[origin] += real_tokens

    def bad_file(self, path: str, why: str) -> None:
        """A file skipped under on_bad_file=skip (its records read before the damage still count)."""
        self.bad_files[path] = why

    def _origins_report(self, seq_length: int) -> dict[str, Any]:
        """Bins, tokens and packing efficiency of each origin's sub-dataset."""
        return {"per_origin": {name: {"bins": self.origin_bins[i], "tokens": self.origin_tokens[i],
                                      "packing_efficiency": self.origin_tokens[i] / (self.origin_bins[i] * seq_length)
                                      if self.origin_bins[i] else 0.0}
                               for i, name in enumerate(self.origins)}} if self.origins else {}

    def total(self, key: str) -> int:
        return sum(f[key] for f in self.files)

    def report(self, seq_length: int, extra: dict[str, Any]) -> dict[str, Any]:
        dropped: Counter = Counter()
        for f in self.files:
            dropped.update(f["dropped"])
        tokens = self.total("tokens")
        assert tokens == self.bin_real_tokens, "every kept document is in exactly one bin"
        per_file = {
            p: {**f, "dropped": dict(sorted(f["dropped"].items()))}
            for p, f in zip(self.paths, self.files, strict=False)
        }
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
            **self._samples_report(tokens),
            **self._origins_report(seq_length),
            "bad_files": dict(self.bad_files),
            **extra,
        }


WARN_KEPT_BELOW = 0.5  # below this fraction kept, prepare warns (on stderr and in report.json)


def kept_check(report: dict[str, Any], min_kept: float | None) -> tuple[str | None, str | None]:
    """(error, warning) about how much of the input was kept; the fraction is of the records read
    that `fraction` did not subsample out. Nothing kept is always an error."""
    considered = report["records_in"] - report["subsampled_out"]
    kept = report["records_kept"]
    share = kept / considered if considered else 0.0
    reasons = ", ".join(f"{r}={n}" for r, n in sorted(report["dropped"].items(), key=lambda x: -x[1]))
    top = max(report["dropped"], key=report["dropped"].get) if report["dropped"] else None
    why = f"dropped: {reasons} (most: {top} = {ALL_REASONS[top]})" if top else "no records were read"
    bad = f"; unreadable files: {sorted(report['bad_files'])}" if report.get("bad_files") else ""
    summary = f"kept {kept} of {considered} records ({share:.1%}); {why}{bad}"
    if kept == 0:
        return f"prepare kept no record: {summary}; see docs/data.md for the accepted formats", None
    if min_kept is not None and share < min_kept:
        return f"prepare {summary}, below min_kept={min_kept}; fix the inputs or lower min_kept", None
    if share < WARN_KEPT_BELOW:
        return None, (f"prepare {summary}; below {WARN_KEPT_BELOW:.0%} kept: "
                      "check the inputs (min_kept=F makes this an error)")
    return None, None
