"""Summaries and histograms of a prepared dataset, computed from its index (no pass over tokens)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def bin_fill(ds: Any) -> np.ndarray:
    """float [B]: real (unpadded) tokens of each bin / seq_length."""
    if len(ds) == 0:
        return np.zeros(0)
    return np.add.reduceat(ds.docs[:, 1], ds.bins[:-1]) / ds.seq_length


def summary_text(ds: Any) -> str:
    """The report's headline numbers plus what the index says, as aligned text."""
    rep = ds.report or {}
    lines = [f"dataset {ds.path}: {len(ds)} bins, {len(ds.docs)} documents, seq_length {ds.seq_length}, "
             f"pad_multiple {ds.manifest.get('pad_multiple')}"]
    for key in ("records_in", "records_kept", "subsampled_out", "dropped_total", "truncated", "tokens_total",
                "loss_tokens_total", "padding_tokens", "bins", "packing_efficiency"):
        if key in rep:
            value = rep[key]
            lines.append(f"  {key:<22} {value:.4f}" if isinstance(value, float) else f"  {key:<22} {value}")
    for reason, count in rep.get("dropped", {}).items():
        lines.append(f"  dropped.{reason:<14} {count}   ({rep.get('reason_legend', {}).get(reason, '')})")
    for path, f in rep.get("per_file", {}).items():
        lines.append(f"  file {path}: in {f['records_in']}, kept {f['records_kept']}, dropped {f['dropped']}")
    lengths = ds.docs[:, 1]
    if len(lengths):
        lines.append(f"  document length: mean {lengths.mean():.0f}, median {np.median(lengths):.0f}, "
                     f"max {lengths.max()}")
    return "\n".join(lines)


def write_histograms(ds: Any, out_dir: str | os.PathLike) -> list[Path]:
    """PNG histograms of document lengths, assistant turns per document and bin fill."""
    import matplotlib  # lazy: 0.3 s to import, for the histograms only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use (no display), which must come first

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    turns = {int(k): v for k, v in (ds.report or {}).get("assistant_turns_histogram", {}).items()}
    plots = [
        ("doc_lengths.png", "document length (tokens, unpadded)", ds.docs[:, 1], None),
        ("turns_per_doc.png", "assistant turns per document", None, turns),
        ("bin_fill.png", "bin fill (real tokens / seq_length)", bin_fill(ds), None),
    ]
    paths = []
    for name, label, values, counts in plots:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        if counts is not None:
            ax.bar(list(counts), list(counts.values()))
        else:
            ax.hist(values, bins=50)
        ax.set_xlabel(label)
        ax.set_ylabel("count")
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        paths.append(out / name)
    return paths
