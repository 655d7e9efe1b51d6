"""Readers: the corpus's parquet layout, JSONL, save_to_disk directories and hub names."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nemo_terminal.data.pipeline.readers import BadRow, InputFile, iter_rows, resolve_inputs
from nemo_terminal.data.pipeline.synthetic import iter_records, write_jsonl, write_parquet
from nemo_terminal.errors import UserError


def test_corpus_layout_directory_expands_to_every_config(tmp_path):
    root = tmp_path / "Terminal-Corpus"
    for name in ("code", "math"):
        write_parquet(root / "dataset_adapters" / f"{name}.parquet", 3, seed=1, source=name if name == "code" else None)
    for level in ("easy", "medium", "mixed"):
        write_parquet(root / "synthetic_tasks/skill_based" / level / "debugging" / "data_filtered.parquet", 2, seed=2)
    files = resolve_inputs([str(root)])
    assert [f.kind for f in files] == ["parquet"] * 5
    assert [os.path.relpath(f.path, root) for f in files][:2] == ["dataset_adapters/code.parquet",
                                                                   "dataset_adapters/math.parquet"]
    rows = [r for f in files for r in iter_rows(f)]
    assert len(rows) == 12 and all(r[0]["role"] == "user" for r in rows)
    schema = pq.read_schema(root / "dataset_adapters/code.parquet")
    columns = {"conversations", "agent", "model", "episode", "trial_name", "enable_thinking", "source"}
    assert columns <= set(schema.names)


def test_synthetic_rows_follow_terminal_corpus_format():
    rows = list(iter_records(40, seed=3, parse_error_rate=0.3))
    for row in rows:
        conv = row["conversations"]
        n_assistant = sum(t["role"] == "assistant" for t in conv)
        assert row["episode"] == f"episode-{n_assistant - 1}" and row["agent"] == "terminus-2"
        assert "Task Description:" in conv[0]["content"] and "Current Terminal Screen:" in conv[0]["content"]
        for t in conv[1::2]:
            assert t["content"].startswith("<think>\n")
            json.loads(t["content"].split("</think>\n\n", 1)[1])  # the answer is JSON
    users = [t["content"] for r in rows for t in r["conversations"][2::2]]
    for prefix in ("New Terminal Output:", "Previous response had parsing errors:", "Current terminal state:"):
        assert any(u.startswith(prefix) for u in users), prefix
    assert any('"task_complete": true' in r["conversations"][-1]["content"] for r in rows)


def test_jsonl_bad_lines_become_counted_bad_rows(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", 2, seed=0)
    with open(p, "ab") as f:
        f.write(b"{not json\n\n")
        f.write(b'{"conversations": [{"role": "user", "content": "caf\xff"}]}\n')
        f.write(b'{"other": 1}\n')
    rows = list(iter_rows(InputFile(str(p), "jsonl")))
    assert len(rows) == 5 and isinstance(rows[0], list)
    assert [r.reason for r in rows[2:]] == ["malformed", "invalid_utf8", "malformed"]
    assert f"{p}:3" in rows[2].detail


def test_parquet_invalid_utf8_row_is_isolated(tmp_path):
    data = [b"hello", b"bad\xff", b"ok"]
    offsets = np.cumsum([0] + [len(x) for x in data]).astype(np.int32)
    content = pa.Array.from_buffers(pa.string(), 3,
                                    [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(data))])
    turns = pa.StructArray.from_arrays([pa.array(["user", "assistant", "user"]), content], ["role", "content"])
    pq.write_table(pa.table({"conversations": pa.ListArray.from_arrays(pa.array([0, 2, 3], pa.int32()), turns)}),
                   tmp_path / "bad.parquet")
    rows = list(iter_rows(InputFile(str(tmp_path / "bad.parquet"), "parquet")))
    assert isinstance(rows[0], BadRow) and rows[0].reason == "invalid_utf8"
    assert rows[1] == [{"role": "user", "content": "ok"}]


def test_save_to_disk_directory(tmp_path):
    import datasets

    rows = list(iter_records(5, seed=4))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    files = resolve_inputs([str(tmp_path / "ds")])
    assert files and all(f.kind == "arrow" for f in files)
    got = [r for f in files for r in iter_rows(f)]
    assert [r[1]["content"] for r in got] == [r["conversations"][1]["content"] for r in rows]


def test_missing_path_and_parquet_without_conversations(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        resolve_inputs([str(tmp_path / "nope.parquet")])
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "t.parquet")
    with pytest.raises(UserError, match="no `conversations` or `messages` column"):
        list(iter_rows(InputFile(str(tmp_path / "t.parquet"), "parquet")))


def test_hub_name_without_network_is_one_clear_line(tmp_path, tokenizer_dir):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-m", "nemo_terminal", "prepare", "--input", "nvidia/Terminal-Corpus",
                          "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "o"), "--seq-length", "2048"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1
    assert out.stderr.startswith("error: --input nvidia/Terminal-Corpus: could not load") and "parquet" in out.stderr
    assert not (tmp_path / "o").exists()


def _rec(i: int, key: str = "conversations") -> dict:
    return {key: [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}


def test_json_array_file_is_records_not_lines(tmp_path):
    """A pretty-printed JSON array of 3 records is 3 records (it was counted as one per line)."""
    p = tmp_path / "chat.json"
    p.write_text(json.dumps([_rec(0), _rec(1, "messages"), _rec(2)], indent=2))
    [inp] = resolve_inputs([str(p)])
    rows = list(iter_rows(inp))
    assert inp.kind == "json" and len(rows) == 3 and rows[1][0]["content"] == "q1"
    jl = tmp_path / "lines.json"  # a .json file in JSON Lines form still reads line by line
    jl.write_text("".join(json.dumps(_rec(i)) + "\n" for i in range(2)))
    assert len(list(iter_rows(resolve_inputs([str(jl)])[0]))) == 2


def test_utf8_bom_is_ignored_in_jsonl_and_json(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.json"
    a.write_bytes(b"\xef\xbb\xbf" + (json.dumps(_rec(0)) + "\n" + json.dumps(_rec(1)) + "\n").encode())
    b.write_bytes(b"\xef\xbb\xbf" + json.dumps([_rec(0)]).encode())
    assert [r[0]["content"] for r in iter_rows(InputFile(str(a), "jsonl"))] == ["q0", "q1"]
    assert [r[0]["content"] for r in iter_rows(InputFile(str(b), "json"))] == ["q0"]


def test_latin1_json_array_is_an_error_naming_the_file(tmp_path):
    p = tmp_path / "latin.json"
    p.write_bytes(json.dumps([{"conversations": [{"role": "user", "content": "caf\u00e9"}]}],
                             ensure_ascii=False).encode("latin-1"))
    with pytest.raises(UserError, match=r"latin\.json: not UTF-8.*iconv"):
        list(iter_rows(InputFile(str(p), "json")))


def test_messages_column_in_parquet(tmp_path):
    pq.write_table(pa.table({"messages": [_rec(0)["conversations"]]}), tmp_path / "m.parquet")
    assert list(iter_rows(InputFile(str(tmp_path / "m.parquet"), "parquet")))[0][1]["content"] == "a0"


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_parquet_names_the_file(tmp_path, damage):
    from nemo_terminal.data.pipeline.readers import BadInputFile

    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"conversations": [_rec(i)["conversations"] for i in range(300)]}), good,
                   row_group_size=50)
    data = bytearray(good.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    else:
        data[200:1200] = bytes(x ^ 0xFF for x in data[200:1200])
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(data))
    with pytest.raises(BadInputFile, match=rf"{bad}: cannot be read as parquet \("):
        list(iter_rows(InputFile(str(bad), "parquet")))


def test_dataset_dict_split_is_chosen_and_a_missing_one_lists_the_others(tmp_path):
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list([_rec(i) for i in range(4)]),
                               "validation": datasets.Dataset.from_list([_rec(i) for i in range(10, 12)])})
    dd.save_to_disk(str(tmp_path / "dd"))
    count = {s: sum(len(list(iter_rows(f))) for f in resolve_inputs([str(tmp_path / "dd")], split=s))
             for s in ("train", "validation")}
    assert count == {"train": 4, "validation": 2}
    assert len([r for f in resolve_inputs([str(tmp_path / "dd")]) for r in iter_rows(f)]) == 4  # default: train
    with pytest.raises(UserError, match=r"no split 'test'; available: \['train', 'validation'\].*--split"):
        resolve_inputs([str(tmp_path / "dd")], split="test")


def test_origins_come_from_the_corpus_layout_not_the_source_column(tmp_path):
    from nemo_terminal.data.pipeline.origins import origin_of

    root = tmp_path / "Terminal-Corpus"
    write_parquet(root / "dataset_adapters" / "code.parquet", 2, seed=0, source="leetcode")
    write_parquet(root / "synthetic_tasks" / "skill_based" / "medium" / "networking" / "data_filtered.parquet", 2,
                  seed=1)
    origins = sorted(f.origin for f in resolve_inputs([str(root)]))
    assert origins == ["dataset_adapters/code", "skill_based_medium/networking"]
    assert origin_of("/x/shards/part-0001.jsonl", "/x/shards") == "shards"  # a directory's shards stay together
    assert origin_of("/x/my data.jsonl", "/x/my data.jsonl") == "my_data"
