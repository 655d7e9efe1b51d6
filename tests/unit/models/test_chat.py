"""Rendering and loss masks: decoding the trained tokens gives back exactly the assistant texts."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nemo_terminal.data.pipeline.synthetic import make_record
from nemo_terminal.models.chat import ChatRenderer, Document, strip_think
from nemo_terminal.models.tokenizer import IM_END_ID, IM_START_ID


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))


def _turns(seed: int, **kw) -> list[tuple[str, str]]:
    rec = make_record(random.Random(seed), **kw)
    return [(t["role"], t["content"]) for t in rec["conversations"]]


def _trained_runs(doc: Document) -> list[np.ndarray]:
    m = doc.mask.astype(np.int8)
    starts = np.flatnonzero(np.diff(np.concatenate([[0], m])) == 1)
    stops = np.flatnonzero(np.diff(np.concatenate([m, [0]])) == -1) + 1
    return [doc.tokens[a:b] for a, b in zip(starts, stops, strict=False)]


def _expected(turns, thinking: str) -> list[str]:
    answers = [c for r, c in turns if r == "assistant"]
    if thinking == "drop":
        return [strip_think(a) for a in answers]
    return answers  # keep and strip_history (one sample per turn) train every turn with its reasoning


@pytest.mark.parametrize("thinking", ["keep", "strip_history", "drop"])
def test_masked_tokens_decode_to_exactly_the_assistant_texts(tok, thinking):
    turns = _turns(3, target_tokens=3000, parse_error_rate=0.5, complete=True)
    assert sum(r == "assistant" for r, _ in turns) >= 4 and "<think>" in turns[1][1]
    doc = ChatRenderer(tok, thinking, 1 << 20, "truncate_turns").render_many([turns])[0]
    assert isinstance(doc, Document) and not doc.truncated
    runs = _trained_runs(doc)
    expected = _expected(turns, thinking)
    assert len(runs) == len(expected)
    for run, text in zip(runs, expected, strict=False):
        assert run[-1] == IM_END_ID  # the answer's <|im_end|> is a target
        assert tok.decode(run.tolist(), skip_special_tokens=False) == text + "<|im_end|>"
    # Everything untrained is headers, user turns and the "\n" after <|im_end|>.
    assert doc.tokens[0] == IM_START_ID and doc.mask[:3].sum() == 0
    has_think = [("<think>" in tok.decode(r.tolist(), skip_special_tokens=False)) for r in runs]
    assert has_think == {"keep": [True] * len(runs), "drop": [False] * len(runs),
                         "strip_history": [True] * len(runs)}[thinking]


def test_strip_history_samples_are_what_qwen3s_published_template_renders(tok, tokenizer_dir):
    """Each strip_history sample is Qwen3's stock rendering of the conversation up to its turn:
    history without reasoning, the last turn with it."""
    from nemo_terminal.models.tokenizer import load_tokenizer

    turns = _turns(5, target_tokens=2500)
    doc = ChatRenderer(tok, "strip_history", 1 << 20, "truncate_turns").render_many([turns])[0]
    hf = load_tokenizer(tokenizer_dir)  # carries the published Qwen3 template
    ends = [i + 1 for i, (r, _) in enumerate(turns) if r == "assistant"]
    assert len(doc.samples()) == len(ends) == doc.assistant_turns >= 4
    for (tokens, _), end in zip(doc.samples(), ends, strict=False):
        text = hf.apply_chat_template([{"role": r, "content": c} for r, c in turns[:end]], tokenize=False)
        assert tok.decode(tokens.tolist(), skip_special_tokens=False) == text


def test_trailing_user_turn_is_dropped_and_header_masked(tok):
    turns = _turns(7, target_tokens=800, n_turns=2) + [("user", "New Terminal Output:\n\nroot@x:/app# ")]
    doc = ChatRenderer(tok, "keep", 1 << 20, "truncate_turns").render_many([turns])[0]
    text = tok.decode(doc.tokens.tolist(), skip_special_tokens=False)
    assert text.endswith("<|im_end|>\n") and "root@x:/app# <|im_end|>" not in text
    assert doc.mask[-1] == 0 and doc.mask[-2] == 1  # "\n" untrained, <|im_end|> trained


@pytest.fixture(scope="module")
def long_turns():
    return _turns(11, target_tokens=3000, n_turns=8, parse_error_rate=0.0)


def _render(tok, turns, policy, seq, thinking="keep"):
    return ChatRenderer(tok, thinking, seq, policy).render_many([turns])[0]


def test_truncate_turns_keeps_longest_prefix_on_whole_assistant_turn(tok, long_turns):
    full = _render(tok, long_turns, "truncate_turns", 1 << 20)
    seq = len(full.tokens) // 2
    doc = _render(tok, long_turns, "truncate_turns", seq)
    assert doc.truncated and len(doc.tokens) <= seq and doc.full_length == len(full.tokens)
    n = len(doc.tokens)
    np.testing.assert_array_equal(doc.tokens, full.tokens[:n])  # a prefix of the full rendering
    assert doc.tokens[-2] == IM_END_ID and doc.mask[-2] == 1  # ends on a whole assistant turn
    # The next assistant turn would not have fit: the next <|im_end|> with mask 1 lies beyond seq.
    later_ends = np.flatnonzero((full.tokens == IM_END_ID) & (full.mask == 1))
    assert later_ends[later_ends > n - 2][0] + 2 > seq


def test_truncate_cuts_hard_and_drop_drops(tok, long_turns):
    full = _render(tok, long_turns, "truncate", 1 << 20)
    doc = _render(tok, long_turns, "truncate", 1000)
    assert doc.truncated and len(doc.tokens) == 1000
    np.testing.assert_array_equal(doc.tokens, full.tokens[:1000])
    np.testing.assert_array_equal(doc.mask, full.mask[:1000])
    assert _render(tok, long_turns, "drop", 1000) == "too_long"
    assert not _render(tok, long_turns, "drop", len(full.tokens)).truncated  # exactly fits


@pytest.mark.parametrize("policy", ["truncate_turns", "truncate", "drop"])
def test_first_turn_that_cannot_fit_has_its_own_reason(tok, long_turns, policy):
    # The agent prompt alone is ~600 tokens.
    expected = "too_long" if policy == "drop" else "first_turn_too_long"
    assert _render(tok, long_turns, policy, 256) == expected


@pytest.mark.parametrize("thinking", ["strip_history", "drop"])
def test_per_turn_samples_that_do_not_fit_are_dropped_and_counted_never_cut(tok, long_turns, thinking):
    full = _render(tok, long_turns, "truncate_turns", 1 << 20, thinking=thinking)
    lengths = [len(t) for t, _ in full.samples()]
    seq = int(np.median(lengths))
    doc = _render(tok, long_turns, "truncate", seq, thinking=thinking)  # length_policy does not apply
    kept = [s for s in full.samples() if len(s[0]) <= seq]
    assert doc.samples_dropped == len(lengths) - len(kept) > 0 and not doc.truncated
    for (t, m), (t_full, m_full) in zip(doc.samples(), kept, strict=False):
        np.testing.assert_array_equal(t, t_full)
        np.testing.assert_array_equal(m, m_full)
    assert full.once_length < len(full.tokens) < full.once_length * len(lengths)
    assert _render(tok, long_turns, "truncate_turns", 256, thinking=thinking) == "no_turn_fits"
