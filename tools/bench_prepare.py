"""Benchmark `prepare` at 32K bins on a synthetic corpus with the paper's length statistics.

Measures, on the same machine in the same run:
  * throughput: prepare's wall time vs. the bare tokenizer encoding the same turn texts
    (texts preloaded; same worker count, same chunking, pool start-up included in both);
    target ratio >= 0.9; also the same ratio in CPU seconds (process + workers), which other
    load on the machine disturbs far less than wall time;
  * packing efficiency (real tokens / (bins x seq_length)); target >= 95%;
  * peak RSS of a prepare process on N and 10N records; target ratio <= 1.5.

    python tools/bench_prepare.py --records 100 --workers 2 --out bench_prepare.json
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

log = logging.getLogger("bench_prepare")

_TOK = None


def _init_encoder(tokenizer_dir: str) -> None:
    global _TOK
    from tokenizers import Tokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _TOK = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))


def _encode_chunk(texts: list[str]) -> int:
    return sum(len(e.ids) for e in _TOK.encode_batch_fast(texts, add_special_tokens=False))


def bare_encode(chunks: list[list[str]], tokenizer_dir: str, workers: int) -> tuple[float, int]:
    """(seconds, tokens) for the bare tokenizer over preloaded chunks of turn texts."""
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(workers, _init_encoder, (tokenizer_dir,)) as pool:
        tokens = sum(pool.imap(_encode_chunk, chunks))
    return time.perf_counter() - t0, tokens


def _rss_child(corpus: str, tokenizer_dir: str, out: str, workers: int, seq: int) -> dict:
    """Run prepare in a fresh process; return its peak RSS (MiB), self and largest child."""
    code = (
        "import json, resource, sys\n"
        "from nemo_terminal.data.pipeline.prepare import prepare_dataset\n"
        "from nemo_terminal.data.pipeline.config import PrepareConfig\n"
        f"rep = prepare_dataset([{corpus!r}], {tokenizer_dir!r}, {out!r}, "
        f"PrepareConfig(seq_length={seq}, workers={workers}, progress=False), force=True)\n"
        "s = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "c = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'self_mib': s, 'child_mib': c, "
        "'records': rep['records_in'], 'tokens': rep['tokens_total']}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _cpu_s() -> float:
    """CPU seconds of this process and its reaped children (the worker pools)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100, help="records in the small corpus (the large has 10x)")
    ap.add_argument("--seq-length", type=int, default=32768)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench_prepare.json")
    ap.add_argument("--work-dir", default=None, help="scratch directory (default: a temp dir)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from nemo_terminal.data.pipeline.config import PrepareConfig
    from nemo_terminal.data.pipeline.prepare import prepare_dataset
    from nemo_terminal.data.pipeline.readers import InputFile, iter_rows
    from nemo_terminal.data.pipeline.synthetic import write_parquet
    from nemo_terminal.models.tokenizer import write_qwen3_tokenizer

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_prepare_"))
    tok = str(write_qwen3_tokenizer(work / "tokenizer"))
    small = str(write_parquet(work / "small.parquet", args.records, seed=0, lengths="paper"))
    large = str(write_parquet(work / "large.parquet", 10 * args.records, seed=1, lengths="paper"))
    cfg = PrepareConfig(seq_length=args.seq_length, workers=args.workers, progress=False)

    rows = list(iter_rows(InputFile(small, "parquet")))
    chunks = [[t["content"] for r in rows[i:i + cfg.chunk_size] for t in r]
              for i in range(0, len(rows), cfg.chunk_size)]
    bare_s, prep_s, bare_cpu, prep_cpu, report = [], [], [], [], None
    for k in range(args.repeats):
        c0 = _cpu_s()
        t, n_tokens = bare_encode(chunks, tok, args.workers)
        bare_s.append(t)
        c1 = _cpu_s()
        t0 = time.perf_counter()
        report = prepare_dataset([small], tok, work / "out_small", cfg, force=True)
        prep_s.append(time.perf_counter() - t0)
        bare_cpu.append(c1 - c0)
        prep_cpu.append(_cpu_s() - c1)
        log.info("repeat %d: bare %.2fs (%.2f cpu-s), prepare %.2fs (%.2f cpu-s) (%d tokens)",
                 k, bare_s[-1], bare_cpu[-1], prep_s[-1], prep_cpu[-1], n_tokens)
    ratios = [b / p for b, p in zip(bare_s, prep_s, strict=False)]
    rss_small = _rss_child(small, tok, str(work / "rss_small"), args.workers, args.seq_length)
    rss_large = _rss_child(large, tok, str(work / "rss_large"), args.workers, args.seq_length)
    large_rep = json.loads((work / "rss_large" / "report.json").read_text())
    result = {
        "workers": args.workers, "seq_length": args.seq_length, "records_small": args.records,
        "records_large": 10 * args.records, "tokens_encoded_small": n_tokens,
        "bare_encode_s": common.summary(bare_s),
        "prepare_s": common.summary(prep_s),
        "throughput_ratio": common.summary(ratios),
        "cpu_ratio": common.summary([b / p for b, p in zip(bare_cpu, prep_cpu, strict=False)]),
        "prepare_tokens_per_s_median": n_tokens / common.summary(prep_s)["median"],
        "bare_tokens_per_s_median": n_tokens / common.summary(bare_s)["median"],
        "packing_efficiency_small": report["packing_efficiency"],
        "packing_efficiency_large": large_rep["packing_efficiency"],
        "truncated_large": large_rep["truncated"], "bins_large": large_rep["bins"],
        "doc_tokens_large_mean": large_rep["tokens_total"] / max(large_rep["records_kept"], 1),
        "peak_rss_mib": {"small": rss_small, "large": rss_large},
        "rss_growth_10x": (rss_large["self_mib"] + rss_large["child_mib"])
        / (rss_small["self_mib"] + rss_small["child_mib"]),
    }
    common.write_result(args.out, "prepare", result)
    print(f"bare encode {common.fmt(result['bare_encode_s'])}; prepare {common.fmt(result['prepare_s'])}")
    tr, pe = result["throughput_ratio"], result["packing_efficiency_large"]
    print(f"throughput ratio prepare/bare-encode (workers={args.workers}): median {tr['median']:.3f} "
          f"(min {tr['min']:.3f} - max {tr['max']:.3f}); target >= 0.9")
    cr = result["cpu_ratio"]
    print(f"CPU-time ratio bare/prepare (this process + workers; robust to other load): median {cr['median']:.3f} "
          f"(min {cr['min']:.3f} - max {cr['max']:.3f})")
    print(f"prepare {result['prepare_tokens_per_s_median']:,.0f} tok/s "
          f"vs bare {result['bare_tokens_per_s_median']:,.0f} tok/s")
    print(f"packing efficiency: small {result['packing_efficiency_small']:.4f}, large {pe:.4f}; target >= 0.95")
    print(f"peak RSS MiB small {rss_small}, large {rss_large}; growth x{result['rss_growth_10x']:.2f}; target <= 1.5")
    print(f"wrote {args.out}")
    if not args.work_dir:  # a temp dir of ours (~350 MB): gone; a --work-dir the user named stays
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
