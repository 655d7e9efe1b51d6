"""`nemo-terminal tiny-model`: a random tiny Qwen3 + the Qwen3 tokenizer, offline."""

from __future__ import annotations

import argparse

from nemo_terminal.options import check_int

HELP = (
    "Write a random-weight tiny Qwen3 in Hugging Face format (config.json, model.safetensors, "
    "tokenizer) for tests and the CPU demo. Vocabulary and tokenizer are the real Qwen3 ones."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory (must be empty unless --force)")
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--num-kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=32,
                        help="heads*head_dim may differ from hidden size, as in Qwen3-0.6B")
    parser.add_argument("--ffn-size", type=int, default=128)
    parser.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=True,
                        help="share embedding and output weights (Qwen3 <= 4B do)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")


def run(args: argparse.Namespace) -> int:
    from nemo_terminal.models.tiny import write_tiny_model

    for flag in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "ffn_size"):
        check_int(f"--{flag.replace('_', '-')}", getattr(args, flag), 1)
    check_int("--seed", args.seed, 0)

    out = write_tiny_model(
        args.out, num_layers=args.num_layers, hidden_size=args.hidden_size, num_heads=args.num_heads,
        num_kv_heads=args.num_kv_heads, head_dim=args.head_dim, ffn_size=args.ffn_size,
        tie_embeddings=args.tie_embeddings, seed=args.seed, force=args.force,
    )
    print(out)
    return 0
