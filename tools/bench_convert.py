"""Benchmark import/export on a synthetic checkpoint with Qwen3-8B layer shapes.

    python tools/bench_convert.py --layers 2 --reps 3 --work /tmp/bench --out results.json

Times are compared with a plain `shutil.copyfile` (an in-kernel copy) of the same safetensors
bytes in the same run, made by a child process started like the conversion's. Before each
timed side the previous outputs are removed, every dirty page is written back (`sync`), and
the source files' page cache is put in the same state for both: `warm` reads them, `cold`
evicts them (posix_fadvise DONTNEED on those files only). Copy and import alternate, the order
flipped every repetition. Each conversion runs in a child process
that reports the time spent converting (Python start-up and imports excluded), its CPU seconds,
the part of it spent on content hashes (checkpoint/integrity.py; the import target excludes
it), and its own peak RSS (VmHWM); a child that only imports the same modules gives the Python
baseline. Targets: import <= 2x copy, export <= 3x; peak RSS <= 2x the largest shard + baseline.
The load average is recorded: on a shared machine read the per-repetition range before the median.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

CHILD = r"""
import json, resource, sys, time
import torch, megatron.core, transformers, safetensors  # the baseline pays these imports too
import megatron.core.dist_checkpointing.serialization, torch.distributed.checkpoint, tqdm  # import_hf's own
from nemo_terminal.convert import importer
from nemo_terminal.convert.exporter import export_hf
mode, a, b = sys.argv[1], sys.argv[2], sys.argv[3]
hashing = [0.0]
record_hashes = importer.record_hashes
def timed_record_hashes(it):  # timing only: the real hashing runs, its seconds are reported apart
    t0 = time.perf_counter()
    record_hashes(it)
    hashing[0] += time.perf_counter() - t0
importer.record_hashes = timed_record_hashes
if mode == "copy":  # the baseline: an in-kernel copy of the shards, from a process started the same way
    import pathlib, shutil
    shards = sorted(pathlib.Path(a).glob("model-*.safetensors"))
    pathlib.Path(b).mkdir()
cpu0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
if mode == "copy":
    for f in shards:
        shutil.copyfile(f, pathlib.Path(b) / f.name)
elif mode == "import":
    importer.import_hf(a, b, force=True, show_progress=False)
elif mode == "export":
    export_hf(a, b, force=True, show_progress=False)
elif mode == "export_no_hash_check":  # --no-verify-hashes: what the content-hash check costs
    export_hf(a, b, force=True, show_progress=False, verify_hashes=False)
secs, cpu1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
# VmHWM belongs to this exec'd image; ru_maxrss would inherit the parent's high-water mark.
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
print(json.dumps({"seconds": secs, "hash_seconds": hashing[0], "cpu_seconds": cpu, "max_rss_kb": hwm}))
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
    (so both sides read memory), `cold` evicts them (posix_fadvise DONTNEED: both read the disk).
    Only these files are touched, unlike /proc/sys/vm/drop_caches, which needs root and would
    also empty the caches of everything else running on a shared machine."""
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            if state == "warm":
                while fh.read(64 << 20):
                    pass
            else:
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def settle(files: list[Path], cache: str, *remove: Path) -> None:
    """Before each timed side: remove the previous outputs (not timed on either side), write back
    every dirty page (a previous side's writes must not throttle this one), set the cache state."""
    for path in remove:
        shutil.rmtree(path, ignore_errors=True)
    os.sync()
    set_page_cache(files, cache)


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


def prepare_source(work: Path, hf: Path, layers: int, outputs: tuple[Path, ...]) -> None:
    """The synthetic HF checkpoint; a complete one from an earlier run with as many layers is reused."""
    made = hf / f".bench_{layers}_layers"
    for path in outputs if made.is_file() else (work,):
        shutil.rmtree(path, ignore_errors=True)
    if not made.is_file():  # written by a child, so this process stays small
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                        f"import bench_convert as b; from pathlib import Path; b.write_synthetic(Path({str(hf)!r}), "
                        f"{layers})"], check=True)
        made.touch()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = Path(args.work)
    hf, meg, back, copy_dir = work / "hf", work / "meg", work / "hf_back", work / "copy"
    prepare_source(work, hf, args.layers, (meg, back, copy_dir))
    files = sorted(hf.glob("model-*.safetensors"))
    total = sum(f.stat().st_size for f in files)
    largest = max(f.stat().st_size for f in files)

    load_before = os.getloadavg()
    copies: dict[str, list[dict]] = {"cold": [], "warm": []}
    imports: dict[str, list[dict]] = {"cold": [], "warm": []}
    exp, exp_nh, hash_s = [], [], []
    for rep in range(args.reps):
        for cache in ("cold", "warm"):
            # Copy and import alternate, the order flipped every repetition (no side always goes first).
            for side in (("copy", "import") if rep % 2 == 0 else ("import", "copy")):
                settle(files, cache, copy_dir, meg)  # both sides start from the same disk and cache state
                if side == "copy":
                    copies[cache].append(child("copy", hf, copy_dir))
                else:
                    imports[cache].append(child("import", hf, meg))
        if not meg.exists():  # the repetition ended with a copy: export needs an import to read
            child("import", hf, meg)
        settle(files, "warm", back)
        exp.append(child("export", meg, back))
        settle(files, "warm", back)
        exp_nh.append(child("export_no_hash_check", meg, back))
        hash_s.append(_hash_seconds(meg))
    base = child("baseline", hf, meg)
    load_after = os.getloadavg()
    mb = 1024.0
    imp = imports["warm"] + imports["cold"]
    result = {
        "layers": args.layers, "bytes_total": total, "bytes_largest_shard": largest, "reps": args.reps,
        "load_average_1_5_15_min": {"before": list(load_before), "after": list(load_after)},
    }
    for cache in ("warm", "cold"):
        pre = "" if cache == "warm" else "cold_"
        result[f"{pre}copy_seconds"] = common.summary([r["seconds"] for r in copies[cache]])
        result[f"{pre}copy_cpu_seconds"] = common.summary([r["cpu_seconds"] for r in copies[cache]])
        # The <= 2x target is without the content hashing (checkpoint/integrity.py), timed apart.
        result[f"{pre}import_seconds"] = common.summary([r["seconds"] - r["hash_seconds"] for r in imports[cache]])
        result[f"{pre}import_cpu_seconds"] = common.summary([r["cpu_seconds"] for r in imports[cache]])
        result[f"{pre}import_hash_seconds"] = common.summary([r["hash_seconds"] for r in imports[cache]])
        result[f"{pre}import_incl_hash_seconds"] = common.summary([r["seconds"] for r in imports[cache]])
    result.update({
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
    })
    # Each repetition times copy and import back to back, so per-repetition ratios pair up.
    ratios = {"import": ("import_seconds", "copy_seconds"), "import_incl_hash": ("import_incl_hash_seconds",
              "copy_seconds"), "cold_import": ("cold_import_seconds", "cold_copy_seconds"),
              "import_cpu": ("import_cpu_seconds", "copy_cpu_seconds"), "export": ("export_seconds", "copy_seconds")}
    for k, (num, den) in ratios.items():
        r = common.ratio(result[num]["all"], result[den]["all"])
        result[f"{k}_over_copy"], result[f"{k}_over_copy_range"] = r["of_medians"], [r["min"], r["max"]]
    for k in ("import", "export"):
        result[f"{k}_rss_over_largest_shard"] = (result[f"{k}_peak_rss_mb"] - result["baseline_rss_mb"]) / (
            largest / 2**20)
    result["targets"] = {"import_over_copy_max": 2.0, "export_over_copy_max": 3.0, "rss_over_largest_shard_max": 2.0}
    result["hash_gb_per_s"] = result["checkpoint_bytes"] / 1e9 / result["hash_all_files_seconds"]["median"]
    common.write_result(args.out, "convert", result)
    report(result)
    return 0


def report(result: dict) -> None:
    print(f"load average (1/5/15 min): before {result['load_average_1_5_15_min']['before']}, "
          f"after {result['load_average_1_5_15_min']['after']}")
    for k in ("copy_seconds", "import_seconds", "import_hash_seconds", "cold_copy_seconds", "cold_import_seconds",
              "copy_cpu_seconds", "import_cpu_seconds", "export_seconds", "export_no_hash_check_seconds",
              "hash_all_files_seconds"):
        print(f"{k}: {common.fmt(result[k], 's')}")
    targets = {"import": "<= 2 (hashing excluded)", "cold_import": "<= 2 (hashing excluded)", "export": "<= 3",
               "import_incl_hash": "(content hashes included)", "import_cpu": "(CPU seconds, not a target)"}
    for k, target in targets.items():
        lo, hi = result[f"{k}_over_copy_range"]
        print(f"{k}/copy = {result[f'{k}_over_copy']:.2f}x (per-rep {lo:.2f} – {hi:.2f}); {target}")
    print(f"peak RSS: import {result['import_peak_rss_mb']:.0f} MB, export {result['export_peak_rss_mb']:.0f} MB, "
          f"baseline {result['baseline_rss_mb']:.0f} MB, largest shard {result['largest_shard_mb']:.0f} MB")
    print(f"(peak - baseline)/largest shard: import {result['import_rss_over_largest_shard']:.2f}, "
          f"export {result['export_rss_over_largest_shard']:.2f}")

if __name__ == "__main__":
    sys.exit(main())
