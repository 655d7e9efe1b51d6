"""`prepare_dataset`: trajectories -> validated, filtered, loss-masked, packed bins on disk.

Flow: readers (streaming) -> chunks -> workers (validate, filter, render, pad; in order) ->
dedup -> window packer -> PackedDatasetWriter (atomic). Memory is bounded by the chunks in
flight plus one packing window; only the dedup set (8 bytes of hash per kept record) grows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from nemo_terminal.data.pipeline.config import PrepareConfig, identity_config
from nemo_terminal.data.pipeline.filters import build_benchmark_index
from nemo_terminal.data.pipeline.pack import OriginPacker
from nemo_terminal.data.pipeline.parallel_map import WorkerPool, ordered_map
from nemo_terminal.data.pipeline.processing import Result, init_worker, process_chunk
from nemo_terminal.data.pipeline.readers import BadInputFile, InputFile, file_sha256, iter_rows, resolve_inputs
from nemo_terminal.data.pipeline.report import Accounting, kept_check
from nemo_terminal.data.pipeline.validate import VALIDATION_REASONS
from nemo_terminal.data.store import PackedDataset, PackedDatasetWriter
from nemo_terminal.errors import UserError
from nemo_terminal.models.tokenizer import ENDOFTEXT_ID, check_tokenizer_dir, tokenizer_hash
from nemo_terminal.output_dir import DATASET, check_output, remove_stale_temp_dirs

log = logging.getLogger(__name__)

PREPARE_VERSION = 2  # bump when rendering or packing changes what is written for the same inputs


def _keep_by_fraction(seed: int, file_index: int, record_index: int, fraction: float) -> bool:
    if fraction >= 1.0:
        return True
    h = hashlib.blake2b(f"{seed}:{file_index}:{record_index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") < fraction * 2**64


def _chunks(files: list[InputFile], cfg: PrepareConfig, acct: Accounting) -> Iterator[tuple[list, list]]:
    """(metadata [(file index, record index)], rows) of up to chunk_size records, in input order."""
    meta, rows = [], []
    for fi, inp in enumerate(files):
        try:
            for ri, row in enumerate(iter_rows(inp, cfg.filters.require_success)):
                acct.read(fi)
                if not _keep_by_fraction(cfg.seed, fi, ri, cfg.fraction):
                    acct.subsampled(fi)
                    continue
                meta.append((fi, ri))
                rows.append(row)
                if len(rows) == cfg.chunk_size:
                    yield meta, rows
                    meta, rows = [], []
        except BadInputFile as err:
            if cfg.on_bad_file == "stop":
                raise BadInputFile(f"{err}; nothing was published: fix or remove the file, or pass "
                                   "on_bad_file=skip to count it in the report and go on") from None
            log.warning("skipping the rest of %s (on_bad_file=skip): %s", inp.path, err)
            acct.bad_file(inp.path, str(err))
    if rows:
        yield meta, rows


def _identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """What decides the output bytes: compared to make a re-run a no-op."""
    config = identity_config(manifest.get("config", {}))  # also reads manifests of older versions
    return {"tokenizer_hash": manifest.get("tokenizer_hash"), "config": config,
            "inputs": [(i.get("kind"), i.get("sha256") or i.get("path")) for i in manifest.get("inputs", [])],
            "decontaminate_sha256": manifest.get("decontaminate_sha256"),
            "prepare_version": manifest.get("prepare_version")}


def _existing_report(out_dir: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The report of an up-to-date dataset at out_dir, None if there is none; UserError if it differs."""
    if not out_dir.exists():
        return None
    try:
        existing = PackedDataset(out_dir)
    except UserError:
        raise UserError(f"{out_dir} exists but is not a complete dataset; pass --force to replace it") from None
    if _identity(existing.manifest) != _identity(manifest):
        raise UserError(f"{out_dir} holds a dataset prepared from other inputs, tokenizer or settings; "
                        "pass --force to replace it or choose another --out")
    return existing.report or {}


def _manifest(files: list[InputFile], tokenizer_dir: str, cfg: PrepareConfig) -> dict[str, Any]:
    """The dataset's manifest, but for the content hashes: `_add_hashes` fills those in."""
    return {
        "tokenizer_hash": None, "tokenizer_dir": str(Path(tokenizer_dir).resolve()),
        "seq_length": cfg.seq_length, "pad_multiple": cfg.pad_multiple(), "cp_size": cfg.parallel.cp,
        "tp_size": cfg.parallel.tp, "sequence_parallel": cfg.parallel.sequence_parallel, "seed": cfg.seed,
        "config": cfg.to_dict(), "prepare_version": PREPARE_VERSION,
        "thinking": cfg.thinking,  # how training renders reasoning; export's chat template follows it
        "inputs": [{"path": f.path, "kind": f.kind, "origin": f.origin, "sha256": None, "records": None}
                   for f in files],
        "origins": list(dict.fromkeys(f.origin for f in files)),  # each packed into its own bins
        "decontaminate_sha256": None,
        "pad_id": ENDOFTEXT_ID,
    }


def _add_hashes(manifest: dict[str, Any], files: list[InputFile], tokenizer_dir: str, cfg: PrepareConfig) -> None:
    """Fill in the manifest's content hashes: a pass over every input, and ~0.5 CPU-s of JSON for
    the tokenizer (once per process). A run does this while its workers tokenize."""
    manifest["tokenizer_hash"] = tokenizer_hash(tokenizer_dir)
    for entry, f in zip(manifest["inputs"], files, strict=True):
        entry["sha256"] = file_sha256(f)
    decon = cfg.filters.decontaminate_file
    manifest["decontaminate_sha256"] = file_sha256(InputFile(decon, "txt")) if decon else None


def _check_strict(cfg: PrepareConfig, files: list[InputFile], fi: int, ri: int, res: Result) -> None:
    if cfg.strict and res.reason in VALIDATION_REASONS:
        detail = f" ({res.detail})" if res.detail else ""
        raise UserError(f"{files[fi].path}: record {ri} is invalid: {res.reason}: "
                        f"{VALIDATION_REASONS[res.reason]}{detail}; fix it or run without --strict")


def prepare_dataset(inputs: list[str], tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike,
                    cfg: PrepareConfig, force: bool = False) -> dict[str, Any]:
    """Prepare a packed dataset at out_dir and return its report. A no-op (returning the stored
    report) when out_dir already holds the same inputs prepared with the same settings."""
    tokenizer_dir, out = str(check_tokenizer_dir(tokenizer_dir)), Path(out_dir)
    files = resolve_inputs(list(inputs), cfg.split)
    # --out apart from every input, --force only onto a dataset: refused before any work.
    check_output(out, DATASET, inputs=[*inputs, tokenizer_dir, cfg.filters.decontaminate_file], force=force,
                 refuse_existing=False)
    # Unless out may hold an up-to-date dataset, start the workers now: they load the tokenizer
    # while this process hashes the tokenizer and the inputs.
    pool, bench = None, None
    if force or not out.exists():
        bench = _benchmark_index(cfg)
        pool = WorkerPool(process_chunk, cfg.workers, init_worker, (tokenizer_dir, cfg, bench, cfg.pad_multiple())) \
            if cfg.workers > 1 else None
    try:
        return _prepare(files, tokenizer_dir, out, cfg, force, pool, bench)
    finally:
        if pool is not None:
            pool.close()


def _benchmark_index(cfg: PrepareConfig) -> np.ndarray | None:
    if not cfg.filters.decontaminate_file:
        return None
    bench = build_benchmark_index(cfg.filters.decontaminate_file, cfg.filters.decontaminate_ngram)
    log.info("decontamination: %d benchmark %d-grams", len(bench), cfg.filters.decontaminate_ngram)
    return bench


def _prepare(files: list[InputFile], tokenizer_dir: str, out: Path, cfg: PrepareConfig, force: bool,
             pool: WorkerPool | None, bench: np.ndarray | None) -> dict[str, Any]:
    """prepare_dataset after its checks: the no-op test, then the run and its report."""
    manifest = _manifest(files, tokenizer_dir, cfg)
    if not force and out.exists():  # the no-op test compares content hashes: they are needed first
        _add_hashes(manifest, files, tokenizer_dir, cfg)
        existing = _existing_report(out, manifest)
        if existing is not None:
            log.info("%s is up to date with its inputs and settings; nothing to do (--force re-runs)", out)
            return existing
    remove_stale_temp_dirs(out)  # left by a killed prepare
    acct = Accounting([f.path for f in files], manifest["origins"])
    start = time.perf_counter()
    with PackedDatasetWriter(out, manifest, force=force) as writer:
        # The hashes go only into the manifest, written last: computed while the workers tokenize,
        # they no longer hold back the first tasks (the tokenizer's alone took 0.5-1 s of wall time).
        hashed = manifest["tokenizer_hash"] is not None
        _run(files, tokenizer_dir, cfg, bench, acct, writer, pool,
             meanwhile=None if hashed else lambda: _add_hashes(manifest, files, tokenizer_dir, cfg))
        elapsed = time.perf_counter() - start
        report = acct.report(cfg.seq_length, {
            "elapsed_s": round(elapsed, 3), "workers": cfg.workers, "thinking": cfg.thinking,
            "length_policy": cfg.length_policy, "pad_multiple": cfg.pad_multiple(),
            "records_per_s": round(acct.total("records_in") / elapsed, 2),
            "tokens_per_s": round(acct.total("tokens") / elapsed, 1),
        })
        error, warning = kept_check(report, cfg.min_kept)
        if error:  # raised inside the writer: nothing is published
            raise UserError(error)
        if warning:
            log.warning("%s", warning)
            report["warnings"] = [warning]
        for entry, f in zip(manifest["inputs"], acct.files, strict=False):
            entry["records"] = f["records_in"]
        writer.update_manifest(**manifest)
        writer.write_json("report.json", report)
    log.info("prepared %s: %d/%d records kept, %d bins, packing efficiency %.3f, %.0f tokens/s",
             out, report["records_kept"], report["records_in"], report["bins"],
             report["packing_efficiency"], report["tokens_per_s"])
    return report


def _run(files: list[InputFile], tokenizer_dir: str, cfg: PrepareConfig, bench: np.ndarray | None,
         acct: Accounting, writer: Any, pool: WorkerPool | None, meanwhile: Callable[[], None] | None) -> None:
    """The streaming loop: results in input order -> dedup -> packer -> writer. `meanwhile` is
    this process's own work: called once the first results are in (the workers then hold a full
    window of tasks), or at the end when there were none."""
    packer = OriginPacker(cfg.seq_length, cfg.shuffle_window, cfg.seed)
    origin_index = {name: i for i, name in enumerate(dict.fromkeys(f.origin for f in files))}
    file_origin = [origin_index[f.origin] for f in files]
    seen: set[int] = set()
    bar = tqdm(unit="rec", desc="prepare", disable=None if cfg.progress else True, smoothing=0.1)
    t0 = time.perf_counter()

    def write(bins: Iterator[tuple[int, list]]) -> None:
        for origin, b in bins:
            writer.add_bin(b, origin)
            acct.add_bin(sum(length for _, _, length in b), origin)

    chunks = _chunks(files, cfg, acct)
    results = pool.map(chunks) if pool is not None else \
        ordered_map(process_chunk, chunks, 1, init_worker, (tokenizer_dir, cfg, bench, cfg.pad_multiple()))
    try:
        for meta, chunk_results in results:
            if meanwhile is not None:
                meanwhile()
                meanwhile = None
            for (fi, ri), res in zip(meta, chunk_results, strict=False):
                _check_strict(cfg, files, fi, ri, res)
                if res.reason is None and res.dedup_hash is not None:
                    if res.dedup_hash in seen:
                        res.reason = "duplicate"
                    else:
                        seen.add(res.dedup_hash)
                if res.reason is not None:
                    acct.drop(fi, res.reason)
                    continue
                acct.keep(fi, res.length, len(res.tokens), res.loss_tokens, res.assistant_turns,
                          res.truncated, res.full_length)
                if res.pieces:  # a per-turn thinking policy: every sample is its own document
                    acct.add_samples(len(res.pieces), res.samples_dropped, res.once_length)
                for doc in res.documents():
                    write(packer.add(file_origin[fi], doc))
            bar.update(len(meta))
            bar.set_postfix_str(f"{acct.total('tokens') / max(time.perf_counter() - t0, 1e-9):,.0f} tok/s",
                                refresh=False)
        if meanwhile is not None:
            meanwhile()
        write(packer.flush())
    finally:
        results.close()  # the caller closes the pool
        bar.close()
