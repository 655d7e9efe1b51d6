"""prepare on chat data as users have it: messages + system turns, ShareGPT, JSON arrays, BOMs,
DatasetDict splits, corrupt and undecodable files, inputs that keep (almost) nothing, origins."""

from __future__ import annotations

import codecs
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nemo_terminal.data.pipeline.config import PrepareConfig
from nemo_terminal.data.pipeline.prepare import prepare_dataset
from nemo_terminal.data.pipeline.synthetic import write_parquet
from nemo_terminal.data.store import PackedDataset
from nemo_terminal.errors import UserError

SEQ = 512
SYSTEM = "You are a terse terminal agent."


def cfg(**kw) -> PrepareConfig:
    return PrepareConfig(**{"seq_length": SEQ, "progress": False, "shuffle_window": 8, **kw})


def turns(i: int, system: bool = False) -> list[dict]:
    out = [{"role": "system", "content": SYSTEM}] if system else []
    return out + [{"role": "user", "content": f"List the files, take {i}."},
                  {"role": "assistant", "content": f'<think>\nls it is\n</think>\n\n{{"commands": ["ls {i}"]}}'},
                  {"role": "user", "content": "New Terminal Output:\na b c"},
                  {"role": "assistant", "content": '{"task_complete": true}'}]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def docs_of(out: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    ds = PackedDataset(out)
    result = []
    for b in range(len(ds)):
        bn = ds.bin(b)
        start = 0
        for n, padded in zip(bn.doc_lens, bn.doc_lens_padded, strict=False):
            result.append((np.asarray(bn.tokens[start:start + n]), np.asarray(bn.loss_mask[start:start + n])))
            start += padded
    return result


def test_messages_with_system_turn_keeps_every_record_rendered_as_qwen3(tmp_path, tokenizer_dir):
    from tokenizers import Tokenizer

    src = write_jsonl(tmp_path / "chat.jsonl", [{"messages": turns(i, system=True)} for i in range(6)])
    rep = prepare_dataset([str(src)], tokenizer_dir, tmp_path / "ds", cfg())
    assert rep["records_kept"] == 6 and rep["dropped"] == {}
    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    head = tok.encode(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n", add_special_tokens=False).ids
    expected = {}
    for i in range(6):  # reference: the whole conversation as one string, tokenized at once
        text = "".join(f"<|im_start|>{t['role']}\n{t['content']}<|im_end|>\n" for t in turns(i, system=True))
        expected[i] = tok.encode(text, add_special_tokens=False).ids
    docs = docs_of(tmp_path / "ds")
    assert sorted(d[0].tolist() for d in docs) == sorted(expected.values())
    for tokens, mask in docs:
        assert tokens[:len(head)].tolist() == head and not mask[:len(head)].any()  # system: rendered, never trained
        assert mask.any()


def test_sharegpt_json_array_with_bom_keeps_every_record(tmp_path, tokenizer_dir):
    role = {"system": "system", "user": "human", "assistant": "gpt"}
    records = [
        {"conversations": [{"from": role[t["role"]], "value": t["content"]} for t in turns(i, system=i % 2 == 0)]}
        for i in range(3)
    ]
    src = tmp_path / "sharegpt.json"
    src.write_bytes(codecs.BOM_UTF8 + json.dumps(records, indent=2).encode())  # 30+ lines, 3 records
    rep = prepare_dataset([str(src)], tokenizer_dir, tmp_path / "ds", cfg())
    assert (rep["records_in"], rep["records_kept"]) == (3, 3)


def test_latin1_input_fails_with_the_per_reason_counts_and_publishes_nothing(tmp_path, tokenizer_dir):
    src = tmp_path / "latin.jsonl"
    src.write_bytes("".join(json.dumps({"conversations": [{"role": "user", "content": "caf\u00e9"},
                                                          {"role": "assistant", "content": "na\u00efve"}]},
                                       ensure_ascii=False) + "\n" for _ in range(3)).encode("latin-1"))
    with pytest.raises(UserError, match=r"kept no record: kept 0 of 3 records \(0\.0%\); dropped: invalid_utf8=3"):
        prepare_dataset([str(src)], tokenizer_dir, tmp_path / "ds", cfg())
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds.tmp-*"))


def test_seq_length_1_exits_non_zero_naming_the_reason(tmp_path, tokenizer_dir, capsys):
    from nemo_terminal.cli import main

    src = write_jsonl(tmp_path / "chat.jsonl", [{"conversations": turns(i)} for i in range(4)])
    code = main(["prepare", "--input", str(src), "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "ds"),
                 "--seq-length", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "kept no record" in err and "first_turn_too_long=4" in err
    assert not (tmp_path / "ds").exists()


def test_below_half_kept_warns_and_min_kept_makes_it_an_error(tmp_path, tokenizer_dir, caplog):
    bad = [{"conversations": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}] * 3
    src = write_jsonl(tmp_path / "mixed.jsonl", [{"conversations": turns(i)} for i in range(2)] + bad)
    with caplog.at_level(logging.WARNING):
        rep = prepare_dataset([str(src)], tokenizer_dir, tmp_path / "ds", cfg())
    assert rep["records_kept"] == 2 and "below 50% kept" in rep["warnings"][0] and "bad_role=3" in rep["warnings"][0]
    assert any("below 50% kept" in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / "ds" / "report.json").read_text())["warnings"] == rep["warnings"]
    with pytest.raises(UserError, match=r"kept 2 of 5 records \(40\.0%\).*below min_kept=0\.5"):
        prepare_dataset([str(src)], tokenizer_dir, tmp_path / "ds2", cfg(min_kept=0.5))
    assert not (tmp_path / "ds2").exists()


def test_corrupt_parquet_stops_by_default_and_is_counted_under_skip(tmp_path, tokenizer_dir):
    good = write_jsonl(tmp_path / "good.jsonl", [{"conversations": turns(i)} for i in range(3)])
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"conversations": [turns(i) for i in range(100)]}), bad, row_group_size=20)
    bad.write_bytes(bad.read_bytes()[:-100])  # footer gone: pyarrow cannot open it
    with pytest.raises(UserError, match=rf"{bad}: cannot be read as parquet \(.*on_bad_file=skip"):
        prepare_dataset([str(good), str(bad)], tokenizer_dir, tmp_path / "ds", cfg())
    assert not (tmp_path / "ds").exists()
    rep = prepare_dataset([str(good), str(bad)], tokenizer_dir, tmp_path / "ds", cfg(on_bad_file="skip"))
    assert rep["records_kept"] == 3 and list(rep["bad_files"]) == [str(bad)]
    assert "cannot be read as parquet" in rep["bad_files"][str(bad)]


def test_dataset_dict_split_is_chosen(tmp_path, tokenizer_dir):
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"messages": turns(i)} for i in range(5)]),
                               "validation": datasets.Dataset.from_list([{"messages": turns(i)} for i in range(7, 9)])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert prepare_dataset([str(tmp_path / "dd")], tokenizer_dir, tmp_path / "t", cfg())["records_kept"] == 5
    assert prepare_dataset([str(tmp_path / "dd")], tokenizer_dir, tmp_path / "v", cfg(split="validation"))[
        "records_kept"] == 2


def test_each_origin_is_packed_into_its_own_bins(tmp_path, tokenizer_dir):
    root = tmp_path / "Terminal-Corpus"
    code = write_parquet(root / "dataset_adapters" / "code.parquet", 12, seed=0, source="leetcode")
    net = write_parquet(root / "synthetic_tasks" / "skill_based" / "medium" / "net" / "data_filtered.parquet", 10,
                        seed=1)
    rep = prepare_dataset([str(root)], tokenizer_dir, tmp_path / "all", cfg(seq_length=2048))
    ds = PackedDataset(tmp_path / "all")
    assert ds.origins == ["dataset_adapters/code", "skill_based_medium/net"]
    assert {o: v["bins"] for o, v in rep["per_origin"].items()} == {
        o: len(ds.origin_bins(o)) for o in ds.origins} and sum(v["bins"] for v in rep["per_origin"].values()) == len(ds)
    for name, path in (("dataset_adapters/code", code), ("skill_based_medium/net", net)):
        alone = prepare_dataset([str(path)], tokenizer_dir, tmp_path / name.replace("/", "_"), cfg(seq_length=2048))
        assert rep["per_origin"][name]["tokens"] == alone["tokens_total"]
        own = sorted(np.asarray(ds.bin(int(b)).tokens).tobytes() for b in ds.origin_bins(name))
        ref = PackedDataset(tmp_path / name.replace("/", "_"))
        assert own == sorted(np.asarray(ref.bin(b).tokens).tobytes() for b in range(len(ref)))  # same bins, same docs
