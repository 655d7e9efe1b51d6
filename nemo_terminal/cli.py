"""`nemo-terminal`: one subcommand per arrow of the data flow, plus helpers.

Each subcommand lives in `nemo_terminal/commands/<name>.py` and exposes
`HELP`, `add_arguments(parser)` and `run(args) -> int`. Modules are imported
only when their subcommand is chosen, so `--help` stays instant and a broken
optional dependency only affects the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from nemo_terminal.errors import UserError
from nemo_terminal.runtime.launch import launch_rank

# name -> (module, one-line help). The one registry of subcommands.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("nemo_terminal.commands.demo", "run the whole chain on a CPU with a tiny Qwen3"),
    "tiny-model": ("nemo_terminal.commands.tiny_model", "write a random tiny Qwen3 + the Qwen3 tokenizer (HF format)"),
    "import": ("nemo_terminal.commands.import_hf", "HF Qwen3 checkpoint -> megatron-core torch_dist checkpoint"),
    "export": ("nemo_terminal.commands.export_hf", "megatron-core checkpoint -> HF safetensors directory"),
    "verify": ("nemo_terminal.commands.verify", "compare HF and Megatron logits on fixed chat prompts"),
    "prepare": ("nemo_terminal.commands.prepare", "trajectories -> validated, filtered, masked, packed shards"),
    "taskgen": (
        "nemo_terminal.commands.taskgen",
        "Terminal-Task-Gen: adapt / generate / envs / collect tasks and trajectories",
    ),
    "stats": ("nemo_terminal.commands.stats", "print a prepared dataset's report and write histograms"),
    "inspect": ("nemo_terminal.commands.inspect", "show one packed bin with its trained tokens marked"),
    "train": ("nemo_terminal.commands.train", "supervised fine-tuning on megatron-core"),
    "plan": ("nemo_terminal.commands.plan", "estimate per-GPU memory of a training config"),
    "eval": ("nemo_terminal.commands.eval", "Terminal-Bench 2.0 on an export (vLLM + Harbor), and its report"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemo-terminal",
        description="Fine-tune Qwen3 into terminal agents on megatron-core. "
        "Run `nemo-terminal demo` to see the whole chain on a CPU.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, text) in COMMANDS.items():
        sub.add_parser(name, help=text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = _top_parser()
        if not argv:
            parser.print_help()
            return 2
        parser.parse_args(argv)  # prints help or the unknown-command error
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"nemo-terminal {name}", description=module.HELP)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    _quiet_dependencies()
    try:
        return int(module.run(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _quiet_dependencies() -> None:
    """Our INFO lines stay readable: megatron's config dumps and CPU-only warnings are muted."""
    rank0 = launch_rank() == 0
    logging.basicConfig(level=logging.INFO if rank0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("megatron", "torch.distributed", "transformers", "datasets"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for category in (UserWarning, FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(megatron|torch|transformers)\b.*")


if __name__ == "__main__":
    sys.exit(main())
