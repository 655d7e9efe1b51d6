"""`nemo-terminal demo`: the whole chain on a CPU, in minutes, with a tiny Qwen3.

Each stage runs the real subcommand in its own process (exactly what a user
would type), so the demo also proves the commands compose.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nemo_terminal.options import check_int
from nemo_terminal.output_dir import DEMO, DEMO_MARKER, check_output

HELP = (
    "Run the whole chain on a CPU: tiny Qwen3 + tokenizer -> prepare the bundled sample "
    "trajectories -> import -> train (1 process, then 2 processes at TP=2) -> export -> "
    "verify the export against transformers. Prints each stage's timing and a summary."
)
SAMPLE = Path(__file__).resolve().parents[1] / "resources" / "sample_trajectories.jsonl"
REPO_CONFIG = "tiny_cpu.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="demo_work", help="where every artifact goes (default: ./demo_work)")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per training stage (default 4)")
    parser.add_argument("--seq-length", type=int, default=2048, help="packed bin length in tokens (default 2048)")
    parser.add_argument("--force", action="store_true", help="wipe an existing --workdir first")


def _recipe() -> Path:
    """configs/tiny_cpu.yaml of the source checkout (the README installs it editable)."""
    path = Path(__file__).resolve().parents[2] / "configs" / REPO_CONFIG
    if not path.is_file():
        raise SystemExit(f"{path} not found: run the demo from a source checkout (pip install -e .)")
    return path


class _Stages:
    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []

    def run(self, title: str, args: list[str], launcher: list[str] | None = None) -> str:
        print(f"==> {title}", flush=True)
        cmd = (launcher or [sys.executable]) + ["-m", "nemo_terminal", *args]
        t0 = time.perf_counter()
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
            raise SystemExit(f"demo stage '{title}' failed (exit {proc.returncode}); command: {' '.join(cmd)}")
        self.times.append((title, dt))
        print(f"    done in {dt:.1f}s", flush=True)
        return proc.stdout


def run(args: argparse.Namespace) -> int:
    check_int("--steps", args.steps, 1)
    check_int("--seq-length", args.seq_length, 1)

    # --force wipes only an earlier demo's directory (it carries DEMO_MARKER), never the cwd or inputs.
    work = check_output(args.workdir, DEMO, force=args.force, flag="--workdir")
    if work.exists() and any(work.iterdir()):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / DEMO_MARKER).write_text('{"written_by": "nemo-terminal demo"}\n')
    hf, meg, data = work / "tiny_hf", work / "megatron", work / "data"
    run1, run2, export = work / "run_tp1", work / "run_tp2", work / "export_hf"
    recipe = str(_recipe())
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    common = [f"train.max_steps={args.steps}", "checkpoint.save_interval=0", "checkpoint.resume=never"]
    s = _Stages()
    s.run("1. tiny Qwen3 + tokenizer", ["tiny-model", "--out", str(hf), "--seed", "0"])
    s.run("2. prepare the bundled sample trajectories",
          ["prepare", "--input", str(SAMPLE), "--tokenizer", str(hf), "--out", str(data),
           "--seq-length", str(args.seq_length)])
    s.run("3. import HF -> Megatron", ["import", "--hf-dir", str(hf), "--out", str(meg), "--dtype", "fp32"])
    s.run("4a. train, 1 process", ["train", "--config", recipe, f"run_dir={run1}", f"model.megatron_dir={meg}",
                                   f"data.path={data}", *common])
    s.run("4b. train on, 2 processes at TP=2", ["train", "--config", recipe, f"run_dir={run2}",
                                                f"model.megatron_dir={run1}", f"data.path={data}",
                                                "parallel.tp=2", *common], launcher=torchrun)
    s.run("5. export Megatron -> HF", ["export", "--megatron-dir", str(run2), "--out", str(export)])
    verify = s.run("6. verify the export against transformers", ["verify", "--hf-dir", str(export),
                                                                 "--megatron-dir", str(run2)])
    _summary(s, data, run1, run2, verify)
    return 0


def _summary(s: _Stages, data: Path, run1: Path, run2: Path, verify: str) -> None:
    from nemo_terminal.training.metrics import read_metrics

    report = json.loads((data / "report.json").read_text())
    first, second = read_metrics(run1), read_metrics(run2)
    print("\n== summary ==")
    for title, dt in s.times:
        print(f"  {dt:7.1f}s  {title}")
    print(f"  records kept {report['records_kept']}/{report['records_in']}, bins {report['bins']}, "
          f"packing efficiency {report['packing_efficiency'] * 100:.1f}%")
    print(f"  loss: first step {first[0]['loss']:.4f} -> last step {second[-1]['loss']:.4f} "
          f"({len(first)} steps at TP=1, then {len(second)} at TP=2)")
    print(f"  export check: {verify.strip().splitlines()[-1]}")
