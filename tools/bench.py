"""One entry point for every benchmark: each subject times its work against a baseline, in one run.

    python tools/bench.py SUBJECT [--quick] [subject options] --out result.json
    python tools/bench.py all [--quick] [--out-dir bench_results]     # the CPU subjects, one JSON each
    python tools/bench.py SUBJECT --help

Subjects (baseline in brackets):
  convert   import/export of a Qwen3-8B-shaped checkpoint          [plain copy of the same bytes]
  prepare   prepare on a paper-shaped synthetic corpus              [bare tokenizer on the same text]
  loader    data-module tokens/s at 32K bins, DP/CP split           [raw memmap read of the same bins]
  step      Trainer step, --device cpu (tiny) or gpu (8B layers)    [bare megatron-core fwd-bwd + optimizer]

`--quick` shrinks sizes and repetitions so `all --quick` finishes in a few minutes on 2 cores;
options given after it win. See docs/benchmarks.md for the figures and how to read them.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

MODULES = {"convert": "bench_convert", "prepare": "bench_prepare", "loader": "bench_loader", "step": "bench_step"}
ALIASES = {"conversion": "convert"}
CPU_SUBJECTS = ("convert", "prepare", "loader", "step")  # `all`: step runs as --device cpu
QUICK = {
    "convert": ["--layers", "2", "--reps", "2"],
    "prepare": ["--records", "20", "--repeats", "2"],
    "loader": ["--bins", "32", "--repeats", "3"],
    "step": ["--seq-length", "256", "--micro-batches", "2", "--reps", "3", "--warmup", "1"],
}


def run_subject(subject: str, argv: list[str], quick: bool) -> int:
    """Run one subject's `main` in this process; quick presets go first so explicit options win."""
    module = importlib.import_module(MODULES[subject])
    return int(module.main((QUICK[subject] if quick else []) + argv) or 0)


def run_all(argv: list[str], quick: bool) -> int:
    """Each CPU subject in its own process (thread settings, logging and peak RSS stay separate)."""
    parser = argparse.ArgumentParser(prog="tools/bench.py all")
    parser.add_argument("--out-dir", type=Path, default=Path("bench_results"), help="one JSON per subject here")
    out_dir = parser.parse_args(argv).out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for subject in CPU_SUBJECTS:
        extra = ["--device", "cpu"] if subject == "step" else []
        cmd = [sys.executable, str(TOOLS / "bench.py"), subject, *(["--quick"] if quick else []), *extra,
               "--out", str(out_dir / f"{subject}.json")]
        print(f"== {subject}: {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd).returncode:
            failed.append(subject)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """SUBJECT and --quick; every other option (and --help after SUBJECT) goes to the subject's own parser."""
    parser = argparse.ArgumentParser(prog="tools/bench.py", description=__doc__, add_help=False, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", help=f"one of {', '.join([*MODULES, 'all'])}")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repetitions")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args, rest = parser.parse_known_args(argv)
    subject = ALIASES.get(args.subject, args.subject)
    if subject == "all":
        return run_all(rest, args.quick)
    if subject not in MODULES:
        print(f"unknown subject {args.subject!r}; choose one of {', '.join([*MODULES, 'all'])}", file=sys.stderr)
        return 2
    return run_subject(subject, rest, args.quick)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
