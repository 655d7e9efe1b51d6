"""`nemo-terminal verify`: HF vs Megatron logits on fixed chat prompts (torchrun for TP/PP > 1)."""

from __future__ import annotations

import argparse

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
    parser.add_argument("--atol", type=float, default=1e-3, help="largest allowed |logit difference|")


def run(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state

    from nemo_terminal.checkpoint import directory as cio
    from nemo_terminal.convert import verify
    from nemo_terminal.runtime import destroy, init_distributed

    from nemo_terminal.runtime import ParallelConfig

    cfg = cio.read_model_config(args.megatron_dir)  # layout errors before any process group exists
    ParallelConfig(tp=args.tp, pp=args.pp).check_model(cfg.num_hidden_layers, cfg.num_attention_heads,
                                                       cfg.num_key_value_heads)
    init_distributed()
    prompts = verify.prompt_ids(cio.tokenizer_dir(args.megatron_dir))
    logits = verify.megatron_logits(args.megatron_dir, prompts, tp=args.tp, pp=args.pp)
    reporter = (parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0
                and parallel_state.get_data_parallel_rank() == 0)
    diff = torch.zeros(1)
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
