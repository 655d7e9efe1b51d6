"""`nemo-terminal eval run|report`: Terminal-Bench 2.0 on an export, and the table from a Harbor job."""

from __future__ import annotations

import argparse
import signal
import sys

from nemo_terminal.errors import UserError
from nemo_terminal.options import ThinkingPolicy

HELP = (
    "run: serve an exported checkpoint with vLLM (40,960-token context, qwen3 reasoning parser) and run "
    "Harbor's Terminal-Bench 2.0 with Terminus-2 against it, then report. report: accuracy (mean ± s.e. over "
    "attempts), per-category accuracy, pass@k, tokens and turns per trial from Harbor job directories "
    "(JSON + PNG). See docs/evaluation.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="{run,report}", required=True)
    run = sub.add_parser("run", help="serve the export and run Terminal-Bench 2.0 against it")
    run.add_argument("--hf-dir", required=True, help="the export (`nemo-terminal export --out`)")
    run.add_argument("--jobs-dir", default="eval_jobs", help="where Harbor writes its job directory")
    run.add_argument("--job-name", default=None, help="default: <served name>__<time>")
    run.add_argument("--served-name", default=None, help="model name in the API (default: the export's directory name)")
    run.add_argument("--thinking", choices=ThinkingPolicy.values(), default=None,
                     help="how the model was trained (default: read from the export's chat template); "
                          "keep turns Terminus-2's interleaved_thinking on")
    run.add_argument("--tp", type=int, default=None,
                     help="vLLM tensor parallel size (default: 1 for ≤8B, 2 for 14B, 4 for 32B)")
    run.add_argument("--max-model-len", type=int, default=40960, help="context length (the paper's evaluation: 40960)")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--attempts", type=int, default=5, help="attempts per task (Harbor --n-attempts)")
    run.add_argument("--concurrency", type=int, default=8, help="trials at once (Harbor --n-concurrent)")
    run.add_argument("--summarize", action="store_true",
                     help="turn Terminus-2's context summarisation on (off: it rewrites prompts away from training)")
    run.add_argument("--dataset", default="terminal-bench@2.0")
    run.add_argument("--env", default="docker", help="Harbor environment (docker, podman, singularity, module:Class)")
    run.add_argument("--vllm", default="vllm", help="the vllm executable")
    run.add_argument("--harbor", default="harbor",
                     help="the harbor executable (default: the Harbor venv of nemo_terminal.harbor.install)")
    run.add_argument("--vllm-arg", action="append", default=[], help="extra `vllm serve` argument (repeatable)")
    run.add_argument("--harbor-arg", action="append", default=[], help="extra `harbor run` argument (repeatable)")
    run.add_argument("--health-timeout", type=float, default=1800.0, help="seconds to wait for vLLM's /health")
    run.add_argument("--dry-run", action="store_true", help="print every command with its final flags; run nothing")
    rep = sub.add_parser("report", help="the paper's table from Harbor job directories")
    rep.add_argument("jobs_dir", help="a Harbor job directory, or a directory of them (one agent/model)")
    rep.add_argument("--tasks-dir", action="append", default=[],
                     help="directory holding the tasks (NAME/task.toml) for categories; default: the trial's "
                          "local task path, then Harbor's cache")
    rep.add_argument("--out", default=None, help="where to write eval_report.json and the PNG (default: JOBS_DIR)")


def run(args: argparse.Namespace) -> int:
    if args.action == "report":
        from nemo_terminal.evaluation.report import build_report, format_report, write_outputs

        rep = build_report(args.jobs_dir, args.tasks_dir)
        print(format_report(rep))
        for path in write_outputs(rep, args.out or args.jobs_dir):
            print(f"wrote {path}")
        return 0
    from nemo_terminal.evaluation.plan import EvalSettings
    from nemo_terminal.evaluation.run import dry_run_text, run_eval
    from nemo_terminal.evaluation.server import Interrupted

    if args.tp is not None and args.tp < 1:
        raise UserError("--tp must be at least 1")
    settings = EvalSettings(
        hf_dir=args.hf_dir, jobs_dir=args.jobs_dir, job_name=args.job_name, served_name=args.served_name,
        thinking=args.thinking, tp=args.tp, max_model_len=args.max_model_len, port=args.port, vllm=args.vllm,
        vllm_args=args.vllm_arg, harbor=args.harbor, dataset=args.dataset, environment=args.env,
        n_attempts=args.attempts, n_concurrent=args.concurrency, summarize=args.summarize,
        harbor_args=args.harbor_arg, health_timeout_s=args.health_timeout)
    if args.dry_run:
        print(dry_run_text(settings))
        return 0
    try:
        return run_eval(settings)
    except Interrupted as err:
        print(f"stopped by {err}; vllm serve was shut down", file=sys.stderr)
        return 128 + signal.SIGTERM
