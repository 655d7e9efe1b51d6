"""`nemo-terminal export`: Megatron checkpoint directory -> HF safetensors directory."""

from __future__ import annotations

import argparse

from nemo_terminal.options import ThinkingPolicy, check_number
from nemo_terminal.output_dir import HF_EXPORT, check_output, require_dir

HELP = (
    "Export the checkpoint that MEG/latest points to (import output or a training checkpoint saved at any "
    "TP/PP) as a Hugging Face Qwen3 directory: sharded safetensors + index, config, generation config, "
    "tokenizer. Needs no network and no original HF directory."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--megatron-dir", required=True,
                        help="checkpoint directory: ours (`latest`), Megatron-LM's or Megatron-Bridge's "
                             "(latest_checkpointed_iteration.txt), or one iteration directory")
    parser.add_argument("--tokenizer", default=None,
                        help="HF tokenizer directory, for a Megatron-LM/Bridge checkpoint that has none inside")
    parser.add_argument("--out", required=True, help="HF directory to create")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                        help="output dtype (default: the checkpoint's model_config.json torch_dtype)")
    parser.add_argument("--max-shard-gb", type=float, default=5.0, help="largest safetensors shard, in GB (1e9 bytes)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--thinking", choices=ThinkingPolicy.values(), default=None,
                        help="chat template policy (default: the thinking= the run's data was prepared with; "
                             "a checkpoint never trained here keeps its tokenizer's template)")
    parser.add_argument("--no-verify-hashes", dest="verify_hashes", action="store_false",
                        help="skip checking the checkpoint files' content hashes (faster; sizes and the "
                             "restricted unpickler are still checked)")


def run(args: argparse.Namespace) -> int:
    # Cheap refusals first, before torch is even imported (export_hf repeats them).
    check_number("--max-shard-gb", args.max_shard_gb, low=0, low_open=True, fix="the Hub's usual shards are 5")
    require_dir(args.megatron_dir, "--megatron-dir")
    check_output(args.out, HF_EXPORT, inputs=[args.megatron_dir, args.tokenizer], force=args.force)
    from nemo_terminal.convert.exporter import export_hf

    print(export_hf(args.megatron_dir, args.out, dtype=args.dtype, force=args.force,
                    max_shard_bytes=int(args.max_shard_gb * 1e9), thinking=args.thinking,
                    verify_hashes=args.verify_hashes, tokenizer=args.tokenizer))
    return 0
