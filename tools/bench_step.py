"""Training-step benchmark: our Trainer vs a bare megatron-core forward-backward, same model and batch.

    python tools/bench_step.py --device cpu --out step_cpu.json              # overhead ratio, tiny model
    python tools/bench_step.py --device gpu --out step_gpu.json              # Qwen3-8B layers x4, 32K bins

Both sides share ONE model, optimizer and batch list (a Trainer set up from a recipe, an imported
checkpoint and a prepared dataset), so the ratio isolates what our trainer adds. Three timings,
interleaved, warm-up rounds excluded:
  * bare:          zero grads -> get_forward_backward_func() with a minimal masked-sum loss -> optimizer.step()
  * trainer_step:  Trainer.train_step(batches) (loss reductions, NaN/Inf checks, grad norm, scheduler)
  * trainer_loop:  one step of Trainer.train() (plus the data module, token statistics, metrics, preemption check)
Target (CPU): trainer_loop / bare <= 1.10.

The dataset has exactly one global batch of bins, so every step sees the same bins (reshuffled)
and the same token count. Document lengths follow the paper's mix (lognormal, median ~14K, mean
~17.5K tokens at 32K) scaled by seq_length/32768, first-fit-decreasing packed.

GPU: tokens/s/GPU counts real (unpadded) tokens. MFU = flops_per_step / step time / peak, with
flops_per_step = 6·N·tokens + 6·L·(heads·head_dim)·Σ doc_len² (N: parameters without the input
embedding; see nemo_terminal/training/metrics.py) and peak = 989 TFLOP/s dense bf16 (H100/H200).
Anchor: Megatron-Bridge Qwen3-8B SFT 32K, 34.1 TFLOP/s/GPU (not tuned); target >= 40% MFU.
"""

from __future__ import annotations

import argparse
import logging
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

log = logging.getLogger("bench_step")

REPO = Path(__file__).resolve().parent.parent
ANCHOR_TFLOPS_32K = 34.1   # Megatron-Bridge Qwen3-8B SFT 32K, TP4 CP2, H100 (FACTS.md §5)
ANCHOR_TFLOPS_4K_PRETRAIN = 512.7
TARGET_MFU = 0.40
TARGET_CPU_RATIO = 1.10
PAPER_SEQ = 32768

# Per device: recipe, model shape and default sizes. The GPU shape is Qwen3-8B's layer (FACTS.md §3)
# with 4 layers; the CPU one is small enough that a step takes well under a second on one core.
PRESETS: dict[str, dict[str, Any]] = {
    "gpu": dict(recipe="configs/qwen3_8b_terminal_sft_32k.yaml", precision="bf16", seq_length=32768,
                micro_batches=4, layers=4, backends=["torch", "te"], hidden=4096, heads=32, kv=8,
                head_dim=128, ffn=12288, tie=False),
    "cpu": dict(recipe="configs/tiny_cpu.yaml", precision="fp32", seq_length=512, micro_batches=4,
                layers=4, backends=["torch"], hidden=128, heads=4, kv=2, head_dim=32, ffn=384, tie=True),
}


# -- inputs ---------------------------------------------------------------------------------------
def write_model(hf_dir: Path, device: str, layers: int) -> None:
    """An HF Qwen3 directory of the preset's shape (random weights), written in a child process."""
    p = PRESETS[device]
    if device == "gpu":  # 8B shapes, bf16, sharded like a real checkpoint: reuse the conversion bench's writer
        code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_convert as b; "
                f"from pathlib import Path; b.write_synthetic(Path({str(hf_dir)!r}), {layers})")
    else:
        code = ("from nemo_terminal.models.tiny import write_tiny_model; "
                f"write_tiny_model({str(hf_dir)!r}, num_layers={layers}, hidden_size={p['hidden']}, "
                f"num_heads={p['heads']}, num_kv_heads={p['kv']}, head_dim={p['head_dim']}, "
                f"ffn_size={p['ffn']}, tie_embeddings={p['tie']}, force=True)")
    subprocess.run([sys.executable, "-c", code], check=True)


def import_model(hf_dir: Path, out: Path, precision: str) -> None:
    """`nemo-terminal import`, as a user runs it (its own process: import builds a world of one)."""
    subprocess.run([sys.executable, "-m", "nemo_terminal", "import", "--hf-dir", str(hf_dir), "--out", str(out),
                    "--dtype", precision, "--force"], check=True, stdout=subprocess.DEVNULL)


def paper_doc_lengths(n: int, seq_length: int, seed: int) -> list[int]:
    """n document lengths with the paper's distribution, scaled to seq_length, clipped to one bin."""
    from nemo_terminal.data.pipeline.synthetic import paper_length

    rng = random.Random(seed)
    scale = seq_length / PAPER_SEQ
    return [min(seq_length, max(2, int(paper_length(rng) * scale))) for _ in range(n)]


def write_dataset(out: Path, num_bins: int, seq_length: int, tokenizer_hash: str, vocab: int,
                  seed: int = 0) -> dict[str, Any]:
    """A prepared dataset of exactly `num_bins` paper-shaped bins; returns its length statistics."""
    from nemo_terminal.data.pipeline.pack import first_fit_decreasing
    from nemo_terminal.data.store import PackedDatasetWriter

    n_docs = num_bins * 4
    while True:  # FFD of paper lengths gives ~1.9 documents per 32K bin; draw until there are enough bins
        lengths = paper_doc_lengths(n_docs, seq_length, seed)
        bins = first_fit_decreasing(lengths, seq_length)
        if len(bins) >= num_bins:
            break
        n_docs *= 2
    # FFD fills its first bins best; take bins spread over the whole list for a representative mix.
    picks = [bins[int(i)] for i in np.linspace(0, len(bins) - 1, num_bins)]
    rng = np.random.default_rng(seed)
    manifest = dict(tokenizer_hash=tokenizer_hash, seq_length=seq_length, pad_multiple=1, pad_id=0, cp_size=1,
                    tp_size=1, sequence_parallel=False, seed=seed, config={"synthetic": "bench_step"}, inputs=[])
    with PackedDatasetWriter(out, manifest, force=True) as w:
        for b in picks:
            w.add_bin([(rng.integers(1, vocab, lengths[i], dtype=np.int32),
                        rng.integers(0, 2, lengths[i], dtype=np.uint8), lengths[i]) for i in b])
    doc_lens = [lengths[i] for b in picks for i in b]
    return {"bins": num_bins, "docs": len(doc_lens), "doc_len_mean": float(np.mean(doc_lens)),
            "doc_len_median": float(np.median(doc_lens)),
            "fill": sum(doc_lens) / (num_bins * seq_length)}


def overrides(args: argparse.Namespace, run_dir: Path, meg: Path, data: Path, backend: str) -> list[str]:
    """The recipe, bent to one process, one global batch of the dataset, and no checkpoint I/O."""
    out = [f"run_dir={run_dir}", f"model.megatron_dir={meg}", f"data.path={data}", "data.num_workers=0",
           f"model.attention_backend={backend}", f"train.global_batch_size={args.micro_batches}",
           "train.micro_batch_size=1", "train.max_steps=1000000", f"train.precision={args.precision}",
           f"train.recompute={args.recompute}", "checkpoint.save_interval=0", "checkpoint.save_final=false",
           "checkpoint.resume=never", "log.interval=1000000", "parallel.tp=1", "parallel.pp=1", "parallel.cp=1"]
    if args.device == "gpu":
        out.append("parallel.sequence_parallel=false")
    return out


# -- the timed work (runs in a world of one: run_distributed(world_size=1)) -----------------------
def _on_device(batch: dict) -> dict:
    import torch

    if not torch.cuda.is_available():
        return batch
    return {k: v.cuda(non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _bare_loss(loss_mask, output_tensor):
    """The least a per-token-loss schedule needs: Σ masked losses and the token count, no report."""
    import torch

    mask = loss_mask.reshape(-1).float()
    return (output_tensor.float().reshape(-1) * mask).sum(), mask.sum().to(torch.int), {}


def _bare_forward(data_iterator, model):
    from functools import partial

    from nemo_terminal.data.loader.batches import packed_seq_params

    batch = next(data_iterator)
    out = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"],
                packed_seq_params=packed_seq_params(batch, padded_only=True))  # as the trainer at CP 1
    return out, partial(_bare_loss, batch["loss_mask"])


def bare_step(model: list, optimizer, batches: list[dict]) -> None:
    """Plain megatron-core: what any trainer on it must do at least, nothing more."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    for chunk in model:
        chunk.zero_grad_buffer()
    optimizer.zero_grad()
    get_forward_backward_func()(
        forward_step_func=_bare_forward, data_iterator=iter([_on_device(b) for b in batches]), model=model,
        num_microbatches=len(batches), seq_length=int(batches[0]["tokens"].shape[1]), micro_batch_size=1,
        forward_only=False)
    optimizer.step()


def step_worker(recipe: str, overrides: list[str], reps: int, warmup: int) -> dict[str, Any]:
    """Set up a Trainer, then time bare / trainer_step / trainer_loop on its model and batches."""
    import warnings

    warnings.simplefilter("ignore")  # megatron's fallback/deprecation notices, once per process
    import torch

    from nemo_terminal.models.provider import resolve_attention_backend
    from nemo_terminal.runtime.device import current_device
    from nemo_terminal.training.config import load_config
    from nemo_terminal.training.metrics import flops_per_step
    from nemo_terminal.training.trainer import Trainer

    logging.getLogger("nemo_terminal").setLevel(logging.WARNING)
    gpu = torch.cuda.is_available()
    cfg = load_config(str(REPO / recipe), overrides)
    tr = Trainer(cfg).setup()
    it = tr.data.train_dataloader()
    batches = [next(it) for _ in range(tr.num_micro)]

    def loop() -> None:
        tr.total_steps = tr.step + 1
        tr.train()

    times = common.time_interleaved(
        {"bare": lambda: bare_step(tr.model, tr.optimizer, batches),
         "trainer_step": lambda: tr.train_step(batches), "trainer_loop": loop},
        reps=reps, warmup=warmup, sync=torch.cuda.synchronize if gpu else None)
    tokens = sum(int(b["num_tokens"]) for b in batches)
    sq = sum(float(((b["cu_seqlens"][1:] - b["cu_seqlens"][:-1]).double() ** 2).sum()) for b in batches)
    return {
        "times": times, "tokens_per_step": tokens, "sum_doc_len_sq": sq,
        "padded_tokens_per_step": sum(int(b["tokens"].shape[1]) for b in batches),
        "flops_per_step": flops_per_step(tr.model_cfg, tokens, sq), "params": tr.model_cfg.num_params(),
        "backend": resolve_attention_backend(cfg.model.attention_backend, cfg.parallel.sequence_parallel),
        "peak_flops": current_device().peak_bf16_flops(),
        "gpu_peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
        "peak_rss_mib": common.peak_rss_mib(), "torch_threads": torch.get_num_threads(),
    }


# -- driver ---------------------------------------------------------------------------------------
def summarize(raw: dict[str, Any], device: str) -> dict[str, Any]:
    t = raw.pop("times")
    res: dict[str, Any] = dict(raw)
    res["seconds"] = {k: common.summary(v) for k, v in t.items()}
    res["trainer_step_over_bare"] = common.ratio(t["trainer_step"], t["bare"])
    res["trainer_loop_over_bare"] = common.ratio(t["trainer_loop"], t["bare"])
    res["overhead_ms_per_step"] = {k: 1e3 * (res["seconds"][k]["median"] - res["seconds"]["bare"]["median"])
                                   for k in ("trainer_step", "trainer_loop")}
    for k, s in res["seconds"].items():
        med = s["median"]
        res.setdefault("tokens_per_s", {})[k] = raw["tokens_per_step"] / med
        res.setdefault("tflops_per_s", {})[k] = raw["flops_per_step"] / med / 1e12
        if raw["peak_flops"]:
            res.setdefault("mfu", {})[k] = raw["flops_per_step"] / med / raw["peak_flops"]
    if device == "gpu":
        res["vs_anchor_32k"] = res["tflops_per_s"]["trainer_loop"] / ANCHOR_TFLOPS_32K
    return res


def print_result(backend: str, r: dict[str, Any], device: str) -> None:
    print(f"[step {device} {backend}] {r['tokens_per_step']} real tokens/step "
          f"({r['padded_tokens_per_step']} padded), {r['params'] / 1e6:.1f}M params")
    for k, s in r["seconds"].items():
        print(f"  {k:13s} {common.fmt(s, 'ms', 1e3)}  {r['tokens_per_s'][k]:,.0f} tokens/s"
              + (f"  {r['tflops_per_s'][k]:.1f} TFLOP/s  MFU {100 * r['mfu'][k]:.1f}%" if "mfu" in r else ""))
    target = f"<= {TARGET_CPU_RATIO}" if device == "cpu" else None
    print(f"  trainer_step/bare = {common.fmt_ratio(r['trainer_step_over_bare'])}")
    print(f"  trainer_loop/bare = {common.fmt_ratio(r['trainer_loop_over_bare'], target)}")
    print(f"  overhead per step: step {r['overhead_ms_per_step']['trainer_step']:.1f} ms, "
          f"loop {r['overhead_ms_per_step']['trainer_loop']:.1f} ms")
    if device == "gpu":
        mfu = r.get("mfu", {}).get("trainer_loop")
        print(f"  trainer_loop {r['tflops_per_s']['trainer_loop']:.1f} TFLOP/s/GPU = "
              f"{r['vs_anchor_32k']:.2f}x the 34.1 anchor; MFU "
              + (f"{100 * mfu:.1f}% (target >= 40%)" if mfu is not None else "n/a (unknown GPU peak)"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--seq-length", type=int, help="bin length (default: 32768 gpu, 512 cpu)")
    p.add_argument("--micro-batches", type=int, help="bins per step, one per micro-batch (default 4)")
    p.add_argument("--layers", type=int, help="transformer layers (default 4)")
    p.add_argument("--backends", nargs="+", choices=["torch", "te"],
                   help="attention backends (default: gpu 'torch te', te skipped where not installed; cpu 'torch')")
    p.add_argument("--recompute", choices=["none", "selective", "full"], default="none")
    p.add_argument("--reps", type=int, default=5, help="timed rounds per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--work", help="scratch directory (default: a temp dir)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per backend before giving up")
    p.add_argument("--out", help="write the JSON result here")
    return p


def _check_device(device: str) -> None:
    import torch

    if device == "gpu" and not torch.cuda.is_available():
        raise SystemExit("step --device gpu needs a CUDA GPU, and torch.cuda.is_available() is False on this "
                         "machine; run `python tools/bench.py step --device cpu` for the CPU overhead harness")


def _backends(args: argparse.Namespace) -> list[str]:
    from nemo_terminal.models.provider import te_available

    chosen = args.backends or PRESETS[args.device]["backends"]
    if "te" in chosen and not te_available():
        if args.backends:
            raise SystemExit("--backends te needs transformer_engine importable on a GPU; it is not here")
        print("transformer_engine is not installed here: skipping the te backend")
        chosen = [b for b in chosen if b != "te"]
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _check_device(args.device)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    p = PRESETS[args.device]
    args.seq_length = args.seq_length or p["seq_length"]
    args.micro_batches = args.micro_batches or p["micro_batches"]
    args.layers = args.layers or p["layers"]
    args.precision = p["precision"]
    backends = _backends(args)

    from nemo_terminal.models.tokenizer import tokenizer_hash
    from nemo_terminal.testing import run_distributed

    work = Path(args.work or tempfile.mkdtemp(prefix=f"bench_step_{args.device}_"))
    hf, meg, data = work / "hf", work / "meg", work / "data"
    write_model(hf, args.device, args.layers)
    import_model(hf, meg, args.precision)
    lengths = write_dataset(data, args.micro_batches, args.seq_length, tokenizer_hash(meg / "tokenizer"),
                            vocab=151936)
    result: dict[str, Any] = {"device": args.device, "seq_length": args.seq_length,
                              "micro_batches": args.micro_batches, "layers": args.layers,
                              "precision": args.precision, "recompute": args.recompute, "reps": args.reps,
                              "warmup": args.warmup, "dataset": lengths, "backends": {}}
    for backend in backends:
        raw = run_distributed(step_worker, world_size=1, timeout=args.timeout, recipe=p["recipe"],
                              overrides=overrides(args, work / f"run_{backend}", meg, data, backend),
                              reps=args.reps, warmup=args.warmup)[0]
        r = summarize(raw, args.device)
        result["backends"][backend] = r
        print_result(backend, r, args.device)
    result["targets"] = {"cpu_trainer_loop_over_bare_max": TARGET_CPU_RATIO, "gpu_mfu_min": TARGET_MFU,
                         "anchor_tflops_32k": ANCHOR_TFLOPS_32K, "anchor_tflops_4k_pretrain": ANCHOR_TFLOPS_4K_PRETRAIN}
    result["flops_formula"] = "6*N*tokens + 6*layers*heads*head_dim*sum(doc_len^2); N excludes input embedding"
    if common.write_result(args.out, "step", result):
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
