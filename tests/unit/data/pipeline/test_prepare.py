"""prepare end to end: invariants of the stored bins, determinism, atomicity, bad records, re-runs."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal

import numpy as np
import pytest

from nemo_terminal.data.pipeline.config import PrepareConfig, load_prepare_config
from nemo_terminal.data.pipeline.prepare import prepare_dataset
from nemo_terminal.data.pipeline.synthetic import write_jsonl, write_parquet
from nemo_terminal.data.store import PackedDataset
from nemo_terminal.errors import UserError

SEQ = 1024
ARRAYS = ("tokens.npy", "loss_mask.npy", "docs.npy", "bins.npy")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    a = write_parquet(d / "adapters" / "code.parquet", 40, seed=0, long_fraction=0.25, long_tokens=2500, source="x")
    b = write_jsonl(d / "synthetic.jsonl", 30, seed=1, long_fraction=0.1, long_tokens=1800)
    return [str(a), str(b)]


def cfg(**kw) -> PrepareConfig:
    return PrepareConfig(**{"seq_length": SEQ, "progress": False, "shuffle_window": 16, **kw})


@pytest.fixture(scope="module")
def prepared(corpus, tokenizer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "ds"
    return out, prepare_dataset(corpus, tokenizer_dir, out, cfg(parallel=dict(cp=2, tp=2, sequence_parallel=True)))


def test_bins_hold_every_kept_document_whole_and_padded(prepared):
    out, rep = prepared
    ds = PackedDataset(out)
    assert ds.manifest["pad_multiple"] == 4 and rep["pad_multiple"] == 4
    assert rep["records_in"] == 70 and rep["records_kept"] == len(ds.docs) and rep["truncated"] > 0
    assert rep["bins"] == len(ds) and set(rep["per_file"]) == set(i["path"] for i in ds.manifest["inputs"])
    real = 0
    for i in range(len(ds)):
        b = ds.bin(i)
        assert b.doc_lens_padded.sum() == len(b.tokens) <= SEQ
        assert (b.doc_lens_padded % 4 == 0).all() and (b.doc_lens_padded - b.doc_lens < 4).all()
        start = 0
        for n, padded in zip(b.doc_lens, b.doc_lens_padded, strict=False):
            doc, mask = b.tokens[start:start + padded], b.loss_mask[start:start + padded]
            assert doc[0] == 151644 and (doc[n:] == 151643).all() and mask[n:].sum() == 0
            start += padded
        real += int(b.doc_lens.sum())
    assert real == rep["tokens_total"]
    assert rep["loss_tokens_total"] == int(np.asarray(ds.loss_mask).sum())
    assert rep["packing_efficiency"] == pytest.approx(real / (len(ds) * SEQ))


def test_same_seed_is_byte_identical_for_any_worker_count(corpus, tokenizer_dir, tmp_path, prepared):
    c = dict(parallel=dict(cp=2, tp=2, sequence_parallel=True))
    prepare_dataset(corpus, tokenizer_dir, tmp_path / "w2", cfg(workers=2, chunk_size=4, **c))
    prepare_dataset(corpus, tokenizer_dir, tmp_path / "s2", cfg(seed=99, **c))
    for name in ARRAYS:
        assert (prepared[0] / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name
    assert (prepared[0] / "tokens.npy").read_bytes() != (tmp_path / "s2" / "tokens.npy").read_bytes()


def test_rerun_is_a_noop_unless_forced_and_mismatch_is_refused(corpus, tokenizer_dir, tmp_path):
    out = tmp_path / "ds"
    prepare_dataset(corpus[1:], tokenizer_dir, out, cfg())
    stamp = (out / "manifest.json").stat().st_mtime_ns
    prepare_dataset(corpus[1:], tokenizer_dir, out, cfg(workers=2))  # workers do not change the output
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="other inputs, tokenizer or settings"):
        prepare_dataset(corpus[1:], tokenizer_dir, out, cfg(thinking="drop"))
    rep = prepare_dataset(corpus[1:], tokenizer_dir, out, cfg(thinking="drop"), force=True)
    assert PackedDataset(out).manifest["config"]["thinking"] == "drop" and rep["thinking"] == "drop"


def test_bad_records_are_counted_and_the_run_continues(corpus, tokenizer_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = open(corpus[1]).read().splitlines()[:5]
    lines = good[:2] + ["{broken", json.dumps({"conversations": [{"role": "assistant", "content": "x"}]}),
                        json.dumps({"conversations": [{"role": "user", "content": "q"},
                                                      {"role": "assistant", "content": ""}]})] + good[2:]
    bad.write_text("\n".join(lines) + "\n")
    rep = prepare_dataset([str(bad)], tokenizer_dir, tmp_path / "ok", cfg())
    assert rep["records_kept"] == 5 and rep["dropped"] == {"malformed": 1, "bad_turn_order": 1, "empty_content": 1}
    with pytest.raises(UserError, match=r"bad\.jsonl: record 2 is invalid: malformed"):
        prepare_dataset([str(bad)], tokenizer_dir, tmp_path / "strict", cfg(strict=True))
    assert not (tmp_path / "strict").exists() and not list(tmp_path.glob(".strict.tmp-*"))


def test_exception_mid_write_leaves_no_dataset(corpus, tokenizer_dir, tmp_path, monkeypatch):
    from nemo_terminal.data import store

    real_add, calls = store.PackedDatasetWriter.add_bin, []

    def failing_add(self, docs, origin=0):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        real_add(self, docs, origin)

    monkeypatch.setattr(store.PackedDatasetWriter, "add_bin", failing_add)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(corpus, tokenizer_dir, tmp_path / "ds", cfg())
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds.tmp-*"))
    with pytest.raises(UserError):
        PackedDataset(tmp_path / "ds")


def _prepare_then_die(corpus, tokenizer_dir, out):
    from nemo_terminal.data import store

    real_add, calls = store.PackedDatasetWriter.add_bin, []

    def add_then_kill(self, docs, origin=0):
        real_add(self, docs, origin)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally blocks: a real crash

    store.PackedDatasetWriter.add_bin = add_then_kill
    prepare_dataset(corpus, tokenizer_dir, out, cfg())


def test_killed_prepare_leaves_nothing_that_loads_and_rerun_recovers(corpus, tokenizer_dir, tmp_path):
    out = tmp_path / "ds"
    proc = mp.get_context("fork").Process(target=_prepare_then_die, args=(corpus, tokenizer_dir, out))
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL
    assert not out.exists() and list(tmp_path.glob(".ds.tmp-*"))  # only the temp dir remains
    with pytest.raises(UserError):
        PackedDataset(out)
    prepare_dataset(corpus, tokenizer_dir, out, cfg())
    assert len(PackedDataset(out)) > 0 and not list(tmp_path.glob(".ds.tmp-*"))


def test_config_file_overrides_and_flags_merge_in_order(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text("seq_length: 4096\nthinking: drop\nfilters:\n  dedup: false\n")
    c = load_prepare_config(str(y), ["thinking=strip_history", "filters.max_turns=9"], seq_length=2048, workers=None)
    assert (c.seq_length, c.thinking, c.filters.dedup, c.filters.max_turns, c.workers) == \
        (2048, "strip_history", False, 9, 1)
    with pytest.raises(UserError, match="thinking must be one of"):
        load_prepare_config(None, ["thinking=sometimes"])
    with pytest.raises(UserError, match="no_such_key"):
        load_prepare_config(None, ["no_such_key=1"])


def test_cli_prepare_stats_inspect(corpus, tokenizer_dir, tmp_path, capsys):
    from nemo_terminal.cli import main

    out = tmp_path / "ds"
    assert main(["prepare", "--input", corpus[1], "--tokenizer", str(tokenizer_dir), "--out", str(out),
                 "--seq-length", "1024", "--cp-size", "2", "progress=false", "thinking=strip_history"]) == 0
    assert json.loads(capsys.readouterr().out)["records_in"] == 30
    assert main(["stats", str(out)]) == 0
    assert "packing_efficiency" in capsys.readouterr().out
    assert {p.name for p in (out / "stats").iterdir()} == {"doc_lengths.png", "turns_per_doc.png", "bin_fill.png"}
    assert main(["inspect", str(out), "--index", "0", "--json"]) == 0
    docs = json.loads(capsys.readouterr().out)["documents"]
    assert docs and all(len(d["input_ids"]) == len(d["loss_mask"]) == d["length"] for d in docs)
    assert all(d["padded_length"] % 4 == 0 for d in docs)
    assert main(["inspect", str(out), "--index", "0"]) == 0
    view = capsys.readouterr().out
    assert "[[<think>" in view and "<|im_end|>]]" in view and "<|im_start|>assistant\n[[" in view
    assert main(["inspect", str(out), "--index", "100000"]) == 1
