"""`nemo-terminal train`: SFT on megatron-core. Launch with torchrun or srun for more than one process."""

from __future__ import annotations

import argparse

HELP = (
    "Supervised fine-tuning of Qwen3 on prepared terminal trajectories. "
    "Config: a YAML recipe (--config, see configs/) plus key=value overrides, e.g. "
    "`nemo-terminal train --config configs/tiny_cpu.yaml train.max_steps=10 parallel.tp=2`. "
    "Run under `torchrun --nproc-per-node N` or `srun` for N processes; dp = N / (tp*pp*cp). "
    "Exit code 75 (EX_TEMPFAIL): stopped by SIGTERM/SIGUSR1 after saving a checkpoint; resume to continue."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML recipe (configs/*.yaml); defaults are the paper's hyperparameters")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. run_dir=runs/x train.lr=1e-5")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    from nemo_terminal.training.config import load_config, to_yaml

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from nemo_terminal.runtime.distributed import destroy
    from nemo_terminal.training.preemption import EXIT_PREEMPTED, exit_together
    from nemo_terminal.training.trainer import Trainer

    trainer = Trainer(cfg)
    try:
        trainer.setup().train()
        if trainer.stopped_by:  # saved and stopped early: a distinct code, so Slurm requeues only then
            exit_together(EXIT_PREEMPTED)
    finally:
        destroy()
    return 0
