"""`nemo-terminal stats DIR`: print a prepared dataset's report and write PNG histograms."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Print a prepared dataset's report and write histograms (document length, turns, bin fill)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="a dataset written by `nemo-terminal prepare`")
    parser.add_argument("--plots", metavar="OUTDIR", help="where to write the PNGs (default: DIR/stats)")


def run(args: argparse.Namespace) -> int:
    from nemo_terminal.data.pipeline.stats import summary_text, write_histograms
    from nemo_terminal.data.store import PackedDataset

    ds = PackedDataset(args.dir)
    print(summary_text(ds))
    for path in write_histograms(ds, args.plots or Path(args.dir) / "stats"):
        print(f"wrote {path}")
    return 0
