"""`nemo-terminal plan`: per-GPU memory estimate of a training config (formulas: nemo_terminal/training/planner.py)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from nemo_terminal.errors import UserError
from nemo_terminal.options import check_int, check_number
from nemo_terminal.training.gpu_memory import GPU_GIB, HEADROOM

HELP = (
    "Estimate the per-GPU memory of a training config (weights, fp32 grads, distributed Adam "
    "states, activations at the recompute setting, logits/cross-entropy, a fixed CUDA/NCCL "
    "allowance) and exit non-zero when it does not fit. The model shape comes from --model-size, "
    "model.megatron_dir/model_config.json, model.hf_dir/config.json or model.size; the sequence "
    "length from --seq-length, the prepared data's manifest.json or data.seq_length."
)
# Keys a shipped recipe leaves `???`: the plan does not need them, so placeholders fill them.
_USER_KEYS = ("model.megatron_dir", "data.path")
_PLACEHOLDER = "<unset>"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML recipe (configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. parallel.tp=8")
    parser.add_argument("--model-size", metavar="SIZE", help="Qwen3 size: 0.6b 1.7b 4b 8b 14b 32b")
    parser.add_argument("--seq-length", type=int, metavar="N", help="tokens per packed bin (prepare --seq-length)")
    parser.add_argument("--num-gpus", type=int, metavar="N",
                        help="GPUs of the run (nodes x GPUs per node); default tp*pp*cp, i.e. dp=1, "
                             "which over-counts the sharded optimizer states")
    parser.add_argument("--gpu", default="h100", choices=sorted(GPU_GIB),
                        help="GPU model, for its usable memory in GiB: " +
                             ", ".join(f"{k} {v}" for k, v in GPU_GIB.items()) + " (default h100)")
    parser.add_argument("--gpu-gib", "--gpu-memory-gb", dest="gpu_gib", type=float, default=None, metavar="GIB",
                        help="memory of one GPU in GiB as torch reports it (overrides --gpu)")
    parser.add_argument("--headroom", type=float, default=HEADROOM, metavar="FRACTION",
                        help=f"share of GPU memory the plan must leave free (default {HEADROOM})")
    parser.add_argument("--workspace-gb", type=float, default=None, metavar="GIB",
                        help="fixed CUDA context/NCCL/fragmentation allowance (default 6)")
    parser.add_argument("--warn-only", action="store_true",
                        help="print a warning instead of failing when it does not fit")


def run(args: argparse.Namespace) -> int:
    from nemo_terminal.training import planner

    _check_flags(args)
    cfg = _load(args.config, args.overrides)
    model, model_src = _model_shape(args, cfg)
    seq, seq_src = _seq_length(args, cfg)
    num_gpus = cfg.parallel.model_parallel_size if args.num_gpus is None else args.num_gpus
    inp = planner.PlanInput(
        model=model, parallel=cfg.parallel, seq_length=seq, num_gpus=num_gpus,
        micro_batch_size=cfg.train.micro_batch_size, global_batch_size=cfg.train.global_batch_size,
        precision=cfg.train.precision, recompute=cfg.train.recompute,
        fused_attention=cfg.model.attention_backend != "local",
        # A plan is for GPUs: fused SwiGLU there; TE's fused RoPE as the trainer decides it (training/performance.py)
        rope_fusion=(cfg.train.rope_fusion and cfg.model.attention_backend in ("auto", "te")
                     and not (model.rope_scaling or cfg.model.yarn_factor)),
        te_norms=cfg.model.attention_backend in ("auto", "te"),
        workspace_gib=planner.WORKSPACE_GIB if args.workspace_gb is None else args.workspace_gb,
    )
    plan = planner.estimate(inp)
    p = cfg.parallel
    print(f"model {model_src}: {model.num_hidden_layers} layers, hidden {model.hidden_size}, "
          f"{model.num_params() / 1e9:.2f}B params")
    print(f"seq_length {seq} ({seq_src}); {num_gpus} GPUs = tp {p.tp} x pp {p.pp} x cp {p.cp} x dp {plan.dp}"
          f"{' (vpp ' + str(p.vpp) + ')' if p.vpp else ''}, sequence_parallel={p.sequence_parallel}, "
          f"recompute={inp.recompute}, precision={inp.precision}, micro_batch={inp.micro_batch_size}")
    for note in plan.notes:
        print(note)
    gpu_gib = GPU_GIB[args.gpu] if args.gpu_gib is None else args.gpu_gib
    print(planner.format_table(plan, gpu_gib, args.headroom))
    if not planner.fits(plan, gpu_gib, args.headroom):
        msg = (f"estimated {plan.total / planner.GIB:.1f} GiB per GPU exceeds "
               f"{planner.usable_gib(gpu_gib, args.headroom):.1f} GiB ({gpu_gib:g} GiB less "
               f"{args.headroom:.0%} headroom); "
               "raise parallel.tp/cp/pp, set train.recompute=full, or use more GPUs")
        if not args.warn_only:
            raise UserError(msg)
        print(f"warning: {msg}")
    return 0


def _load(path: str, overrides: list[str]):
    """load_config, with placeholders for the `???` paths a plan does not need."""
    from omegaconf import OmegaConf

    from nemo_terminal.training.config import load_config

    if not Path(path).is_file():
        raise UserError(f"config file {path} does not exist")
    raw = OmegaConf.load(path)
    given = {o.split("=", 1)[0] for o in overrides}
    fill = [f"{k}={_PLACEHOLDER}" for k in _USER_KEYS
            if k not in given and OmegaConf.select(raw, k, default=None, throw_on_missing=False) is None]
    if "model.hf_dir" in given or OmegaConf.select(raw, "model.hf_dir", default=None):
        # An HF source replaces the checkpoint: blank a `???` megatron_dir rather than fill it.
        fill = [("model.megatron_dir=null" if f.startswith("model.megatron_dir") else f) for f in fill]
    return load_config(path, fill + list(overrides))


def _check_flags(args: argparse.Namespace) -> None:
    check_int("--num-gpus", args.num_gpus, 1, "the GPUs of the whole run", optional=True)
    check_int("--seq-length", args.seq_length, 1, optional=True)
    check_number("--gpu-gib", args.gpu_gib, low=0, low_open=True, optional=True)
    check_number("--headroom", args.headroom, low=0, high=1, high_open=True)
    check_number("--workspace-gb", args.workspace_gb, low=0, optional=True)


def _model_shape(args: argparse.Namespace, cfg):
    """--model-size, else the checkpoint's own config, else model.size (which must agree with it)."""
    from nemo_terminal.models.qwen3 import Qwen3Config, qwen3_size, size_name

    if args.model_size:
        return qwen3_size(args.model_size), f"Qwen3-{args.model_size.upper()} (--model-size)"
    for directory, name in ((cfg.model.megatron_dir, "model_config.json"), (cfg.model.hf_dir, "config.json")):
        if directory and directory != _PLACEHOLDER and (Path(directory) / name).is_file():
            file = Path(directory) / name
            model = Qwen3Config.from_hf_dict(json.loads(file.read_text()), str(file))
            stated = cfg.model.size and qwen3_size(cfg.model.size)
            if stated and size_name(stated) != size_name(model):
                raise UserError(f"model.size={cfg.model.size} disagrees with {file} "
                                f"({size_name(model) or 'another shape'}); fix or remove model.size")
            return model, str(file)
    if cfg.model.size:
        return qwen3_size(cfg.model.size), f"Qwen3-{cfg.model.size.upper()} (model.size)"
    raise UserError("cannot tell the model size: pass --model-size (e.g. 8b), set model.size, or set "
                    "model.megatron_dir to an imported checkpoint")


def _seq_length(args: argparse.Namespace, cfg) -> tuple[int, str]:
    if args.seq_length:
        return args.seq_length, "--seq-length"
    paths = [cfg.data.path] if cfg.data.path else [d.path for d in cfg.data.datasets]
    paths += [d.path for s in cfg.data.stages for d in s.datasets]
    manifests = [Path(p) / "manifest.json" for p in paths if p and p != _PLACEHOLDER]
    lengths = [int(json.loads(m.read_text())["seq_length"]) for m in manifests if m.is_file()]
    if lengths:
        return max(lengths), "from the prepared data's manifest.json"
    if cfg.data.seq_length:
        return cfg.data.seq_length, "data.seq_length"
    raise UserError("cannot tell the sequence length: pass --seq-length (the value given to "
                    "`nemo-terminal prepare --seq-length`), set data.seq_length, or set data.path to a "
                    "prepared dataset")
