"""`nemo-terminal prepare`: trajectories -> validated, filtered, loss-masked, packed shards."""

from __future__ import annotations

import argparse
import json

HELP = (
    "Validate, filter, render (Qwen3 chat format, loss on assistant turns), pack and store "
    "trajectories as memory-mapped bins. Every option is also a config key: pass a YAML file "
    "with --config and/or key=value overrides (e.g. thinking=strip_history filters.dedup=false)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="parquet/JSONL files, directories of them, save_to_disk dirs, or a hub dataset name")
    parser.add_argument("--tokenizer", required=True, metavar="TOKDIR", help="Hugging Face tokenizer directory")
    parser.add_argument("--out", required=True, metavar="DIR", help="dataset directory to create")
    parser.add_argument("--seq-length", type=int, required=True, metavar="N", help="bin size in tokens")
    parser.add_argument("--config", metavar="FILE", help="YAML with PrepareConfig keys")
    parser.add_argument("--tp-size", type=int, help="tensor parallel size of the training run (= parallel.tp)")
    parser.add_argument("--cp-size", type=int, help="context parallel size of the training run (= parallel.cp)")
    parser.add_argument("--sequence-parallel", action="store_true", default=None,
                        help="the training run uses sequence parallelism (= parallel.sequence_parallel=true)")
    parser.add_argument("--workers", type=int, help="tokenizer processes (output is identical for any value)")
    parser.add_argument("--seed", type=int, help="seed for bin order and --fraction subsampling")
    parser.add_argument("--strict", action="store_true", default=None,
                        help="fail on the first invalid record instead of counting it")
    parser.add_argument("--split", help="split of a DatasetDict save_to_disk input (default: train)")
    parser.add_argument("--min-kept", type=float, metavar="F",
                        help="fail when fewer than this fraction of the records are kept (default: warn below 0.5)")
    parser.add_argument("--on-bad-file", choices=("stop", "skip"),
                        help="an unreadable input file stops the run (default) or is skipped and reported")
    parser.add_argument("--force", action="store_true", help="replace an existing dataset at --out")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def run(args: argparse.Namespace) -> int:
    from nemo_terminal.data.pipeline.config import load_prepare_config
    from nemo_terminal.data.pipeline.prepare import prepare_dataset

    aliases = {"tp": args.tp_size, "cp": args.cp_size, "sequence_parallel": args.sequence_parallel}
    parallel = {k: v for k, v in aliases.items() if v is not None} or None
    cfg = load_prepare_config(
        args.config, args.overrides, seq_length=args.seq_length, parallel=parallel,
        workers=args.workers, seed=args.seed, strict=args.strict, split=args.split, min_kept=args.min_kept,
        on_bad_file=args.on_bad_file,
    )
    report = prepare_dataset(args.input, args.tokenizer, args.out, cfg, force=args.force)
    summary = {k: report.get(k) for k in ("records_in", "records_kept", "dropped", "truncated", "tokens_total",
                                          "loss_tokens_total", "bins", "packing_efficiency")}
    print(json.dumps(summary, indent=2))
    return 0
