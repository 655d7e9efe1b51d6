"""`nemo-terminal inspect DIR --index I`: show one packed bin with its trained tokens marked."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "Show bin I of a prepared dataset: decoded documents with the trained tokens coloured or [[bracketed]]."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="a dataset written by `nemo-terminal prepare`")
    parser.add_argument("--index", type=int, default=0, metavar="I", help="bin index (default 0)")
    parser.add_argument("--json", action="store_true", help="print documents as JSON (input_ids, loss_mask)")
    parser.add_argument("--tokenizer", metavar="TOKDIR",
                        help="tokenizer for decoding (default: the one in the manifest)")


def run(args: argparse.Namespace) -> int:
    from nemo_terminal.data.loader.bin_view import bin_documents, render_bin
    from nemo_terminal.data.store import PackedDataset

    ds = PackedDataset(args.dir)
    if args.json:
        print(json.dumps({"bin": args.index, "seq_length": ds.seq_length, "documents": bin_documents(ds, args.index)}))
    else:
        print(render_bin(ds, args.index, args.tokenizer, color=sys.stdout.isatty()))
    return 0
