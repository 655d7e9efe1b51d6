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
    out_dir = Path("bench_results")
    if "--out-dir" in argv:
        out_dir = Path(argv[argv.index("--out-dir") + 1])
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


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    subject, rest = ALIASES.get(argv[0], argv[0]), argv[1:]
    quick = "--quick" in rest
    rest = [a for a in rest if a != "--quick"]
    if subject == "all":
        return run_all(rest, quick)
    if subject not in MODULES:
        print(f"unknown subject {argv[0]!r}; choose one of {', '.join([*MODULES, 'all'])}", file=sys.stderr)
        return 2
    return run_subject(subject, rest, quick)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
