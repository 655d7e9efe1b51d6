"""`nemo-terminal verify`: HF vs Megatron logits on fixed chat prompts (torchrun for TP/PP > 1)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nemo_terminal.options import check_number
from nemo_terminal.output_dir import require_dir

HELP = (
    "Run the HF model and the Megatron checkpoint on fixed chat prompts and compare logits. "
    "Run under torchrun with tp*pp processes for --tp/--pp > 1. The last line printed is "
    "max_abs_logit_diff=<float>; the exit code is 1 above --atol."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hf-dir", required=True)
    parser.add_argument("--megatron-dir", required=True)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--first-stage-layers", type=int, default=None,
                        help="layers on the first pipeline stage, for a pp that does not divide the layers")
    parser.add_argument("--last-stage-layers", type=int, default=None,
                        help="layers on the last pipeline stage, for a pp that does not divide the layers")
    parser.add_argument("--atol", type=float, default=1e-3, help="largest allowed |logit difference|")


def run(args: argparse.Namespace) -> int:
    require_dir(args.hf_dir, "--hf-dir")  # a typo must not become a Hub download attempt
    require_dir(args.megatron_dir, "--megatron-dir")
    check_number("--atol", args.atol, low=0)

    import torch.distributed as dist
    from megatron.core import parallel_state

    from nemo_terminal.checkpoint import directory as cio
    from nemo_terminal.checkpoint.source import open_checkpoint
    from nemo_terminal.convert import verify
    from nemo_terminal.runtime.device import current_device
    from nemo_terminal.runtime.distributed import destroy, init_distributed
    from nemo_terminal.runtime.parallel import ParallelConfig

    ours = Path(args.megatron_dir) / cio.MODEL_CONFIG
    # Layout errors first, before any process group exists (and before the checkpoint itself is read).
    cfg = cio.read_model_config(args.megatron_dir) if ours.is_file() else open_checkpoint(args.megatron_dir).cfg
    layout = ParallelConfig(tp=args.tp, pp=args.pp, first_stage_layers=args.first_stage_layers,
                            last_stage_layers=args.last_stage_layers)
    layout.check_model(cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads)
    source = open_checkpoint(args.megatron_dir)  # ours, Megatron-LM's or Bridge's layout
    init_distributed()
    prompts = verify.prompt_ids(source.tokenizer or args.hf_dir)  # a Megatron-LM checkpoint has none inside
    logits = verify.megatron_logits(args.megatron_dir, prompts, tp=args.tp, pp=args.pp,
                                    first_stage_layers=args.first_stage_layers,
                                    last_stage_layers=args.last_stage_layers)
    reporter = (parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0
                and parallel_state.get_data_parallel_rank() == 0)
    diff = current_device().zeros(1)  # on the backend's device: NCCL cannot reduce a CPU tensor
    if reporter:
        result = verify.compare(verify.hf_logits(args.hf_dir, prompts), logits)
        print(f"prompts={len(prompts)} tokens={result.tokens} tp={args.tp} pp={args.pp}")
        print(f"top1_agreement={result.top1_agreement:.4f}")
        diff[0] = result.max_abs_diff
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    if reporter:
        print(f"max_abs_logit_diff={diff.item():.6g}", flush=True)
    destroy()
    return 0 if diff.item() <= args.atol else 1
