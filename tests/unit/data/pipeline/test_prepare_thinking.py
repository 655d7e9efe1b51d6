"""The thinking policy through prepare and the data module: per-turn samples, their cost, the record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nemo_terminal.data.loader.config import DataConfig
from nemo_terminal.data.loader.module import TerminalDataModule
from nemo_terminal.data.pipeline.config import PrepareConfig
from nemo_terminal.data.pipeline.prepare import prepare_dataset
from nemo_terminal.data.pipeline.synthetic import write_jsonl
from nemo_terminal.data.store import PackedDataset, write_random_dataset
from nemo_terminal.errors import UserError

SEQ = 2048


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """12 records, the first one twice: dedup must drop the copy before it is expanded."""
    path = write_jsonl(tmp_path_factory.mktemp("corpus") / "c.jsonl", 12, seed=3)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + lines[:1]) + "\n")
    return str(path)


def _prepare(corpus, tokenizer_dir, out, thinking):
    cfg = PrepareConfig(seq_length=SEQ, thinking=thinking, progress=False, shuffle_window=8)
    return prepare_dataset([corpus], tokenizer_dir, out, cfg)


def test_strip_history_writes_one_document_per_turn_and_reports_the_multiplier(corpus, tokenizer_dir, tmp_path):
    keep = _prepare(corpus, tokenizer_dir, tmp_path / "keep", "keep")
    rep = _prepare(corpus, tokenizer_dir, tmp_path / "strip", "strip_history")
    ds = PackedDataset(tmp_path / "strip")
    assert ds.manifest["thinking"] == "strip_history"
    assert PackedDataset(tmp_path / "keep").manifest["thinking"] == "keep"
    assert rep["dropped"].get("duplicate") == keep["dropped"].get("duplicate") == 1
    samples = rep["per_turn_samples"]
    assert "per_turn_samples" not in keep
    assert len(ds.docs) == samples["kept"] > rep["records_kept"]
    rows = [json.loads(line) for line in open(corpus)][:12]
    assert rep["records_kept"] == len(rows)
    turns = sum(t["role"] == "assistant" for r in rows for t in r["conversations"])
    assert samples["kept"] + samples["dropped_too_long"] == turns
    assert samples["token_multiplier"] == pytest.approx(rep["tokens_total"] / samples["record_tokens_once"], abs=1e-3)
    assert samples["token_multiplier"] > 1.5
    # Every document holds exactly one trained turn, ending in <|im_end|> "\n".
    for i in range(len(ds)):
        b = ds.bin(i)
        start = 0
        for n, padded in zip(b.doc_lens, b.doc_lens_padded, strict=False):
            mask = np.asarray(b.loss_mask[start:start + n], dtype=np.int8)
            assert np.count_nonzero(np.diff(np.concatenate([[0], mask, [0]]))) == 2 and mask[-2] == 1
            assert b.tokens[start + n - 2] == 151645
            start += padded


def test_a_mixture_of_thinking_policies_is_refused_and_a_single_one_is_known(tmp_path):
    paths = []
    for name, thinking in (("a", "keep"), ("b", "strip_history")):
        out = write_random_dataset(tmp_path / name, num_bins=8, seq_length=64)
        manifest = json.loads((out / "manifest.json").read_text())
        (out / "manifest.json").write_text(json.dumps({**manifest, "thinking": thinking}))
        paths.append(str(out))
    args = dict(global_batch_size=4, micro_batch_size=1, dp_rank=0, dp_size=1, tokenizer_hash="test-tokenizer")
    one = TerminalDataModule(DataConfig(path=paths[0]), **args)
    one.setup()
    assert one.thinking == "keep"
    both = TerminalDataModule(DataConfig(datasets=paths), **args)
    with pytest.raises(UserError, match="different thinking policies"):
        both.setup()
