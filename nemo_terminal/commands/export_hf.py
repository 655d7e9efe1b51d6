"""`nemo-terminal export`: Megatron checkpoint directory -> HF safetensors directory."""

from __future__ import annotations

import argparse

HELP = (
    "Export the checkpoint that MEG/latest points to (import output or a training checkpoint saved at any "
    "TP/PP) as a Hugging Face Qwen3 directory: sharded safetensors + index, config, generation config, "
    "tokenizer. Needs no network and no original HF directory."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--megatron-dir", required=True, help="checkpoint directory with `latest`")
    parser.add_argument("--out", required=True, help="HF directory to create")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                        help="output dtype (default: the checkpoint's model_config.json torch_dtype)")
    parser.add_argument("--max-shard-gb", type=float, default=5.0, help="largest safetensors shard, in GB (1e9 bytes)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    from nemo_terminal.convert.exporter import export_hf

    print(export_hf(args.megatron_dir, args.out, dtype=args.dtype, force=args.force,
                    max_shard_bytes=int(args.max_shard_gb * 1e9)))
    return 0
