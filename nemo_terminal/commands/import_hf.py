"""`nemo-terminal import`: HF Qwen3 directory -> Megatron checkpoint directory."""

from __future__ import annotations

import argparse

from nemo_terminal.output_dir import CHECKPOINT, check_output, require_dir

HELP = (
    "Convert a Hugging Face Qwen3 checkpoint (safetensors) into a megatron-core torch_dist checkpoint "
    "directory (release/ + latest + Megatron-LM's tracker + model_config.json + tokenizer/), "
    "streaming one tensor group at a time."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hf-dir", required=True, help="HF directory: config.json + *.safetensors + tokenizer")
    parser.add_argument("--out", required=True, help="Megatron checkpoint directory to create")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                        help="stored dtype (default: config.json's torch_dtype)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")


def run(args: argparse.Namespace) -> int:
    # Cheap refusals first, before torch is even imported (import_hf repeats them).
    require_dir(args.hf_dir, "--hf-dir")
    check_output(args.out, CHECKPOINT, inputs=[args.hf_dir], force=args.force)
    from nemo_terminal.convert.importer import import_hf

    print(import_hf(args.hf_dir, args.out, dtype=args.dtype, force=args.force))
    return 0
