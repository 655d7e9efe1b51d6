"""ChatRenderer's encoding: ASCII texts skip the tokenizer's NFC normalizer, and get the very same ids."""

from __future__ import annotations

import random
import string

import pytest
from tokenizers import Tokenizer, normalizers

from nemo_terminal.models.chat import ChatRenderer, split_reasoning, think_is_well_formed

# Added tokens, and characters NFC changes or composes (">" + U+0338 is "≯", e with U+0301 is "é").
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "<|fim_pad|>"]
NON_ASCII = ["é", "e\u0301", "A\u030a", "\u212b", "ﬁ", "한", "\u0338", ">\u0338", "🙂", "\u00a0", "我"]


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))


def _text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randrange(1, 10)):
        k = rng.random()
        parts.append(rng.choice(SPECIALS) if k < 0.15 else rng.choice(NON_ASCII) if k < 0.25 else
                     "".join(rng.choice(string.printable) for _ in range(rng.randrange(0, 20))))
    return "".join(parts)


def test_ascii_texts_skip_the_normalizer_with_the_same_ids(tok, tokenizer_dir):
    reference = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    renderer = ChatRenderer(tok, "keep", 1 << 20, "truncate_turns")
    assert renderer._ascii_noop_normalizer is not None  # Qwen3's NFC: the fast path is taken
    rng = random.Random(0)
    texts = [_text(rng) for _ in range(2000)]
    assert 0 < sum(t.isascii() for t in texts) < len(texts)
    want = [e.ids for e in reference.encode_batch_fast(texts, add_special_tokens=False)]
    assert renderer._encode(texts) == want
    assert tok.to_str() == reference.to_str()  # the normalizer is back


def test_a_normalizer_that_changes_ascii_is_always_run(tokenizer_dir):
    lower = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    lower.normalizer = normalizers.Lowercase()
    renderer = ChatRenderer(lower, "keep", 1 << 20, "truncate_turns")
    assert renderer._ascii_noop_normalizer is None
    assert renderer._encode(["Hello World"]) == renderer._encode(["hello world"])


def _split_reasoning_by_split(content: str) -> tuple[str | None, str]:
    """split_reasoning as first written (str.split); the partition version must agree."""
    if "</think>" in content:
        reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
        return reasoning, content.split("</think>")[-1].lstrip("\n")
    return None, content


def _well_formed_by_count(content: str) -> bool:
    if "</think>" not in content:
        return True
    if content.count("</think>") != 1 or content.count("<think>") > 1:
        return False
    head = content.split("</think>")[0]
    return "<think>" not in head or not head.split("<think>")[0].strip()


def test_reasoning_split_and_check_agree_with_their_first_versions():
    rng = random.Random(1)
    pieces = ["<think>", "</think>", "\n", " ", "a", "b c", "<think", "think>", "</", "<", ">"]
    for _ in range(20000):
        content = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 9)))
        assert split_reasoning(content) == _split_reasoning_by_split(content), content
        assert think_is_well_formed(content) == _well_formed_by_count(content), content
