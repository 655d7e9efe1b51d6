"""Loader throughput at 32K bins on one core: tokens/s of TerminalDataModule vs a raw memmap read.

Usage: python tools/bench_loader.py [--seq-length 32768] [--bins 256] [--cp 1] [--dp 1] [--out result.json]

The baseline reads the same bins' tokens and masks straight from the memory map (a copy into a
padded buffer), so the ratio shows what building labels, masks, positions and the CP split costs.
Target: >= 60K tokens/s per loader process.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nemo_terminal.data.loader.config import DataConfig
from nemo_terminal.data.loader.module import TerminalDataModule
from nemo_terminal.data.store import PackedDataset, write_random_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

log = logging.getLogger("bench_loader")


def _raw_read(ds: PackedDataset, order: list[int], seq_length: int) -> None:
    for i in order:
        start, stop = ds.bin_token_span(i)
        buf = np.zeros(seq_length, dtype=np.int64)
        buf[:stop - start] = ds.tokens[start:stop]
        mask = np.zeros(seq_length, dtype=np.uint8)
        mask[:stop - start] = ds.loss_mask[start:stop]
        torch.from_numpy(buf), torch.from_numpy(mask)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-length", type=int, default=32768)
    p.add_argument("--bins", type=int, default=256, help="bins in the synthetic dataset (and per repeat)")
    p.add_argument("--cp", type=int, default=1, help="context-parallel size (rank 0's share is built)")
    p.add_argument("--dp", type=int, default=1, help="data-parallel size (rank 0 reads every dp-th bin)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--data", help="an existing prepared dataset (default: a synthetic one in a temp dir)")
    p.add_argument("--out", help="write the JSON result here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)  # one core, as one loader worker has

    with tempfile.TemporaryDirectory() as tmp:
        path = args.data or str(write_random_dataset(Path(tmp) / "ds", num_bins=args.bins, seq_length=args.seq_length,
                                                     pad_multiple=2 * args.cp, max_doc=24000, seed=0))
        dm = TerminalDataModule(DataConfig(path=path, num_workers=0), global_batch_size=args.dp, micro_batch_size=1,
                                dp_rank=0, dp_size=args.dp, cp_rank=0, cp_size=args.cp,
                                required_pad_multiple=2 * args.cp if args.cp > 1 else 1, tokenizer_hash=None)
        dm.setup()
        n = max(1, min(args.bins, len(dm.datasets[0])) // args.dp)  # this rank's micro-batches per repeat
        tokens_per_batch = dm.seq_length  # full-sequence tokens delivered per micro-batch (all CP ranks' worth)
        loader_rates, raw_rates = [], []
        it = dm.train_dataloader()
        for _ in range(args.repeats):
            t = time.perf_counter()
            for _ in range(n):
                next(it)
            loader_rates.append(n * tokens_per_batch / (time.perf_counter() - t))
            order = [int(b) for _, b in dm.schedule.samples(range(0, n * args.dp, args.dp))]  # rank 0's bins
            t = time.perf_counter()
            _raw_read(dm.datasets[0], order, dm.seq_length)
            raw_rates.append(n * tokens_per_batch / (time.perf_counter() - t))
    loader_s, raw_s = common.summary(loader_rates), common.summary(raw_rates)
    med, raw = loader_s["median"], raw_s["median"]
    result = {
        "seq_length": args.seq_length, "cp": args.cp, "dp": args.dp, "bins_per_repeat": n, "repeats": args.repeats,
        "loader_tokens_per_s": loader_s, "raw_memmap_tokens_per_s": raw_s,
        "loader_vs_raw": med / raw, "target_tokens_per_s": 60000, "meets_target": med >= 60000,
    }
    log.info("loader  tokens/s median %.3g (min %.3g, max %.3g) at seq_length %d, cp %d, dp %d",
             med, min(loader_rates), max(loader_rates), args.seq_length, args.cp, args.dp)
    log.info("raw mmap tokens/s median %.3g (min %.3g, max %.3g); loader/raw = %.3f; target 6e4: %s",
             raw, min(raw_rates), max(raw_rates), med / raw, "met" if med >= 60000 else "MISSED")
    common.write_result(args.out, "loader", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
