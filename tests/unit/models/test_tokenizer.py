"""The offline Qwen3 tokenizer agrees with tiktoken on the same ranks and carries Qwen3's ids."""

from __future__ import annotations

import json
import shutil
import unicodedata

import pytest

from nemo_terminal.errors import UserError
from nemo_terminal.models import tokenizer as qtok

SAMPLES = [
    "Hello world! I'm sure they'll say WE'RE done.",
    "def square(x):\n    return x ** 2  # 12345 67\n\n\n",
    "  leading   spaces\t\ttabs\r\nand CRLF\r\n\r\n   ",
    "中文字符和日本語のテキスト 🤖🚀 émigré naïve Ünïcödé",
    'root@a1b2:/app# ls -la\n{"keystrokes": "cd /tmp && grep -rn \'foo\' .\\n", "duration": 0.1}',
    "3.14159 1e-10 0xDEADBEEF 100000000000",
    "e\u0301 combining accent (NFC folds it)",
]


@pytest.fixture(scope="module")
def hf_tok(tokenizer_dir):
    return qtok.load_tokenizer(tokenizer_dir)


@pytest.fixture(scope="module")
def reference():
    tiktoken = pytest.importorskip("tiktoken")
    return tiktoken.Encoding("qwen", pat_str=qtok.PRETOKENIZE_REGEX, mergeable_ranks=qtok.load_ranks(),
                             special_tokens={})


@pytest.mark.parametrize("text", SAMPLES)
def test_encodes_like_tiktoken(hf_tok, reference, text):
    # Qwen's tokenizer applies NFC first (as the released tokenizer.json does); tiktoken does not.
    expected = reference.encode(unicodedata.normalize("NFC", text))
    assert hf_tok.encode(text, add_special_tokens=False) == expected
    assert hf_tok.decode(expected) == unicodedata.normalize("NFC", text)


def test_special_token_ids(hf_tok):
    for i, (content, _) in enumerate(qtok.ADDED_TOKENS):
        assert hf_tok.convert_tokens_to_ids(content) == qtok.ENDOFTEXT_ID + i
    assert len(hf_tok) == 151669
    assert hf_tok.eos_token_id == qtok.IM_END_ID
    assert hf_tok.pad_token_id == qtok.ENDOFTEXT_ID
    assert hf_tok.model_max_length == 40960
    # Special tokens inside text are single ids, never split by BPE.
    ids = hf_tok.encode("<think>\nx\n</think>", add_special_tokens=False)
    assert ids[0] == qtok.THINK_ID and ids[-1] == qtok.THINK_END_ID


def test_chat_template(hf_tok):
    msgs = [
        {"role": "user", "content": "list files"},
        {"role": "assistant", "content": "<think>\nuse ls\n</think>\n\n{\"a\": 1}"},
        {"role": "user", "content": "New Terminal Output:\nx"},
        {"role": "assistant", "content": "<think>\ndone\n</think>\n\n{\"b\": 2}"},
    ]
    text = hf_tok.apply_chat_template(msgs, tokenize=False)
    assert text == (
        "<|im_start|>user\nlist files<|im_end|>\n"
        "<|im_start|>assistant\n{\"a\": 1}<|im_end|>\n"  # reasoning before the last user turn is dropped
        "<|im_start|>user\nNew Terminal Output:\nx<|im_end|>\n"
        "<|im_start|>assistant\n<think>\ndone\n</think>\n\n{\"b\": 2}<|im_end|>\n"
    )
    prompt = hf_tok.apply_chat_template(msgs[:3], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("x<|im_end|>\n<|im_start|>assistant\n")
    ids = hf_tok(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == qtok.IM_START_ID and ids[-2:] == [qtok.IM_END_ID, 198]  # 198 = "\n"
    assert ids.count(qtok.IM_START_ID) == 4 and ids.count(qtok.THINK_ID) == 1


def test_hash_and_errors(tokenizer_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tokenizer_dir, copy)
    assert qtok.tokenizer_hash(copy) == qtok.tokenizer_hash(tokenizer_dir)
    cfg = json.loads((copy / "tokenizer_config.json").read_text())
    cfg["eos_token"] = "<|endoftext|>"
    (copy / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert qtok.tokenizer_hash(copy) != qtok.tokenizer_hash(tokenizer_dir)
    with pytest.raises(UserError, match="tokenizer.json"):
        qtok.load_tokenizer(tmp_path / "nothing")
