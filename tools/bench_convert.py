"""Benchmark import/export on a synthetic checkpoint with Qwen3-8B layer shapes.

    python tools/bench_convert.py --layers 2 --reps 3 --work /tmp/bench --out results.json

Times are compared with a plain `shutil.copyfile` of the same safetensors bytes in the same run,
with the source files' page cache in the same state for both: `warm` reads them just before each
timed copy and import, `cold` evicts them (posix_fadvise DONTNEED on those files only) just before. Each conversion runs in a child process that reports its own peak
RSS (VmHWM) and the time spent converting (imports excluded); a child that only imports the
same modules gives the Python baseline. Targets: conversion <= 3x copy; peak RSS <= 2x the
largest shard + baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

CHILD = r"""
import json, sys, time
import torch, megatron.core, transformers, safetensors  # the baseline pays these imports too
from nemo_terminal.convert.importer import import_hf
from nemo_terminal.convert.exporter import export_hf
mode, a, b = sys.argv[1], sys.argv[2], sys.argv[3]
t = time.perf_counter()
if mode == "import":
    import_hf(a, b, force=True, show_progress=False)
elif mode == "export":
    export_hf(a, b, force=True, show_progress=False)
elif mode == "export_no_hash_check":  # --no-verify-hashes: what the content-hash check costs
    export_hf(a, b, force=True, show_progress=False, verify_hashes=False)
secs = time.perf_counter() - t
# VmHWM belongs to this exec'd image; ru_maxrss would inherit the parent's high-water mark.
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": secs, "max_rss_kb": hwm}))
"""

SHAPES_8B = dict(hidden=4096, heads=32, kv=8, head_dim=128, ffn=12288, vocab=151936)


def write_synthetic(root: Path, layers: int) -> list[Path]:
    """An untied bf16 Qwen3 with 8B shapes; one shard per 2 layers, embeddings and lm_head apart."""
    import torch
    from safetensors.torch import save_file

    from nemo_terminal.models.qwen3 import Qwen3Config
    from nemo_terminal.models.tokenizer import write_qwen3_tokenizer

    s = SHAPES_8B
    cfg = Qwen3Config(num_hidden_layers=layers, hidden_size=s["hidden"], num_attention_heads=s["heads"],
                      num_key_value_heads=s["kv"], head_dim=s["head_dim"], intermediate_size=s["ffn"],
                      vocab_size=s["vocab"], tie_word_embeddings=False, torch_dtype="bfloat16")
    root.mkdir(parents=True, exist_ok=True)
    shapes = cfg.hf_weight_shapes()
    groups: list[list[str]] = [["model.embed_tokens.weight"]]
    for i in range(0, layers, 2):
        groups.append([k for k in shapes if any(k.startswith(f"model.layers.{j}.") for j in (i, i + 1))])
    groups.append(["model.norm.weight", "lm_head.weight"])
    gen = torch.Generator().manual_seed(0)
    weight_map, files = {}, []
    for n, names in enumerate(groups):
        name = f"model-{n + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {k: (torch.randn(shapes[k], generator=gen) * 0.02).to(torch.bfloat16) for k in names}
        save_file(tensors, str(root / name), metadata={"format": "pt"})
        del tensors
        weight_map.update({k: name for k in names})
        files.append(root / name)
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (root / "config.json").write_text(json.dumps(cfg.to_hf_dict()))
    write_qwen3_tokenizer(root)
    return files


def _hash_seconds(meg: Path) -> float:
    """Hashing every file of the imported checkpoint once (what save records and a load checks)."""
    from nemo_terminal.checkpoint import integrity

    from nemo_terminal.checkpoint.directory import resolve_checkpoint

    it = resolve_checkpoint(meg)
    t = time.perf_counter()
    integrity.hash_share(it, integrity.checkpoint_files(it))
    return time.perf_counter() - t


def set_page_cache(files: list[Path], state: str) -> None:
    """Put the source files' pages in the same state before each timed side: `warm` reads them
    (so both sides read memory), `cold` drops them from the page cache (both read the disk).
    Only these files are touched: no root, no effect on other processes' caches."""
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            if state == "warm":
                while fh.read(64 << 20):
                    pass
            else:
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def child(mode: str, a: Path, b: Path) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(a), str(b)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-4000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_seconds"] = time.perf_counter() - t
    return res


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2, help="8B-shaped decoder layers (one shard per 2)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", default="/tmp/bench_convert")
    parser.add_argument("--out", default="results.json")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    hf, meg, back, copy_dir = work / "hf", work / "meg", work / "hf_back", work / "copy"
    # Written by a child, so this process stays small while it times copies.
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                    f"import bench_convert as b; from pathlib import Path; b.write_synthetic(Path({str(hf)!r}), "
                    f"{args.layers})"], check=True)
    files = sorted(hf.glob("model-*.safetensors"))
    total = sum(f.stat().st_size for f in files)
    largest = max(f.stat().st_size for f in files)

    copy_s, imp, exp, exp_nh, hash_s = [], [], [], [], []
    cold_copy, cold_imp = [], []
    for _ in range(args.reps):
        for cache, copies, imports in (("cold", cold_copy, cold_imp), ("warm", copy_s, imp)):
            copy_dir.mkdir(parents=True, exist_ok=True)
            set_page_cache(files, cache)
            t = time.perf_counter()
            for f in files:
                shutil.copyfile(f, copy_dir / f.name)
            copies.append(time.perf_counter() - t)
            shutil.rmtree(copy_dir)
            set_page_cache(files, cache)
            imports.append(child("import", hf, meg))
        exp.append(child("export", meg, back))
        exp_nh.append(child("export_no_hash_check", meg, back))
        hash_s.append(_hash_seconds(meg))
    base = child("baseline", hf, meg)
    mb = 1024.0
    result = {
        "layers": args.layers, "bytes_total": total, "bytes_largest_shard": largest, "reps": args.reps,
        "copy_seconds": common.summary(copy_s),
        "import_seconds": common.summary([r["seconds"] for r in imp]),
        "cold_copy_seconds": common.summary(cold_copy),
        "cold_import_seconds": common.summary([r["seconds"] for r in cold_imp]),
        "export_seconds": common.summary([r["seconds"] for r in exp]),
        "export_no_hash_check_seconds": common.summary([r["seconds"] for r in exp_nh]),
        "hash_all_files_seconds": common.summary(hash_s),
        "checkpoint_bytes": sum(f.stat().st_size for f in (meg / (meg / "latest").read_text().strip()).iterdir()),
        "import_wall_seconds_incl_startup": common.summary([r["wall_seconds"] for r in imp]),
        "export_wall_seconds_incl_startup": common.summary([r["wall_seconds"] for r in exp]),
        "baseline_rss_mb": base["max_rss_kb"] / mb,
        "import_peak_rss_mb": max(r["max_rss_kb"] for r in imp) / mb,
        "export_peak_rss_mb": max(r["max_rss_kb"] for r in exp) / mb,
        "largest_shard_mb": largest / 2**20,
    }
    # Copy, import and export alternate within each repetition, so per-repetition ratios pair up.
    for k in ("import", "export"):
        r = common.ratio(result[f"{k}_seconds"]["all"], copy_s)
        result[f"{k}_over_copy"] = r["of_medians"]
        result[f"{k}_over_copy_range"] = [r["min"], r["max"]]
    r = common.ratio(result["cold_import_seconds"]["all"], cold_copy)
    result["cold_import_over_copy"], result["cold_import_over_copy_range"] = r["of_medians"], [r["min"], r["max"]]
    for k in ("import", "export"):
        result[f"{k}_rss_over_largest_shard"] = (result[f"{k}_peak_rss_mb"] - result["baseline_rss_mb"]) / (
            largest / 2**20)
    result["targets"] = {"conversion_over_copy_max": 3.0, "rss_over_largest_shard_max": 2.0}
    result["hash_gb_per_s"] = result["checkpoint_bytes"] / 1e9 / result["hash_all_files_seconds"]["median"]
    common.write_result(args.out, "convert", result)
    for k in ("copy_seconds", "import_seconds", "cold_copy_seconds", "cold_import_seconds", "export_seconds",
              "export_no_hash_check_seconds",
              "hash_all_files_seconds"):
        print(f"{k}: {common.fmt(result[k], 's')}")
    for k in ("import", "export", "cold_import"):
        lo, hi = result[f"{k}_over_copy_range"]
        print(f"{k}/copy = {result[f'{k}_over_copy']:.2f}x (per-rep {lo:.2f} – {hi:.2f}); target <= 3")
    print(f"peak RSS: import {result['import_peak_rss_mb']:.0f} MB, export {result['export_peak_rss_mb']:.0f} MB, "
          f"baseline {result['baseline_rss_mb']:.0f} MB, largest shard {result['largest_shard_mb']:.0f} MB")
    print(f"(peak - baseline)/largest shard: import {result['import_rss_over_largest_shard']:.2f}, "
          f"export {result['export_rss_over_largest_shard']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
