"""What is trained is what is served: the exported chat template against prepare's rendering.

For every assistant turn of real-format trajectories, the serving prompt that `transformers`
renders with the exported tokenizer (`apply_chat_template(..., add_generation_prompt=True)`) must be
token-for-token the context that turn was trained with, and the trained tokens must follow it
directly and be exactly the turn's canonical text plus `<|im_end|>`. History reasoning is given
both ways a server receives it: inline `<think>…</think>` in `content`, and split off by vLLM's
qwen3 reasoning parser into `reasoning_content` (sent back by Terminus-2's interleaved_thinking).
"""

from __future__ import annotations

import json
import random
from importlib import resources

import numpy as np
import pytest

from nemo_terminal.data.pipeline.synthetic import make_record
from nemo_terminal.models.chat import (
    EMPTY_THINK,
    ChatRenderer,
    Document,
    join_reasoning,
    split_reasoning,
    think_is_well_formed,
)
from nemo_terminal.models.chat_template import chat_template, published_qwen3_template
from nemo_terminal.models.tokenizer import IM_END_ID, load_tokenizer


def _records() -> list[list[tuple[str, str]]]:
    """The bundled sample, synthetic records with many turns and parse-error recoveries, and a
    truncated tail: the last assistant turn cut inside its reasoning, then an observation."""
    text = resources.files("nemo_terminal").joinpath("resources/sample_trajectories.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    out = [[(t["role"], t["content"]) for t in r["conversations"]] for r in rows[:12]]
    rng = random.Random(7)
    for _ in range(3):
        rec = make_record(rng, target_tokens=2500, n_turns=6, parse_error_rate=0.5)
        out.append([(t["role"], t["content"]) for t in rec["conversations"]])
    cut = list(out[-1])
    role, content = cut[-1]
    cut[-1] = (role, content[: content.index("</think>") // 2])  # no </think>: the generation was cut off
    out.append(cut + [("user", "New Terminal Output:\n\nroot@x:/app# ")])
    assert sum(r == "assistant" for t in out for r, _ in t) > 60
    assert any("parsing errors" in c for t in out for _, c in t)
    return out


RECORDS = _records()


def _vllm_split(text: str) -> dict:
    """The assistant message a client gets back from vLLM's qwen3 reasoning parser and Terminus-2
    sends again with interleaved_thinking (reasoning_content only when non-empty)."""
    if "</think>" not in text:
        return {"role": "assistant", "content": text}
    reasoning, _, content = text.partition("<think>")[2].partition("</think>")
    msg = {"role": "assistant", "content": content}
    if reasoning:
        msg["reasoning_content"] = reasoning
    return msg


def _messages(turns, form: str) -> list[dict]:
    msgs = []
    for role, content in turns:
        if role == "assistant" and form == "separate":
            msgs.append(_vllm_split(join_reasoning(*split_reasoning(content))))
        else:
            msgs.append({"role": role, "content": content})
    return msgs


def _trained_turns(doc: Document, thinking: str):
    """(context tokens, trained tokens) for each trained assistant turn, in order."""
    out = []
    for tokens, mask in doc.samples():
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2], strict=False):
            if thinking != "keep":  # a per-turn sample: context, its one trained turn, "\n"
                assert len(edges) == 2 and b == len(tokens) - 1
            out.append((tokens[:a].tolist(), tokens[a:b].tolist()))
    return out


def _expected_text(content: str, thinking: str) -> str:
    reasoning, answer = split_reasoning(content)
    return (answer if thinking == "drop" else join_reasoning(reasoning, answer)) + "<|im_end|>"


def _check(hf, fast_tok, thinking: str, forms=("inline", "separate")) -> int:
    """Assert the proof for every assistant turn of RECORDS; return the number of turns checked."""
    renderer = ChatRenderer(fast_tok, thinking, 1 << 20, "truncate_turns")
    checked = 0
    for turns, doc in zip(RECORDS, renderer.render_many(RECORDS), strict=False):
        assert isinstance(doc, Document), doc
        positions = [i for i, (r, _) in enumerate(turns) if r == "assistant"]
        pairs = _trained_turns(doc, thinking)
        assert len(pairs) == len(positions)
        for i, (context, trained) in zip(positions, pairs, strict=False):
            assert trained[-1] == IM_END_ID
            assert fast_tok.decode(trained, skip_special_tokens=False) == _expected_text(turns[i][1], thinking)
            for form in forms:
                prompt = hf.apply_chat_template(_messages(turns[:i], form), tokenize=True,
                                                add_generation_prompt=True, return_dict=False)
                assert list(prompt) == context, (thinking, form, i, _first_difference(list(prompt), context))
            checked += 1
    return checked


def _first_difference(a: list[int], b: list[int]) -> int:
    return next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@pytest.fixture(scope="module")
def fast_tok(tokenizer_dir):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def imported(tiny_tied_dir, tmp_path_factory):
    """A Megatron checkpoint imported from an HF directory whose tokenizer carries Qwen3's template."""
    from nemo_terminal.convert.importer import import_hf

    assert json.loads((tiny_tied_dir / "tokenizer_config.json").read_text())["chat_template"] == \
        published_qwen3_template()
    meg = tmp_path_factory.mktemp("served") / "meg"
    import_hf(tiny_tied_dir, meg, dtype="fp32", show_progress=False)
    return meg


def _export(meg, out, thinking=None):
    from nemo_terminal.convert.exporter import export_hf

    export_hf(meg, out, show_progress=False, thinking=thinking)
    template = (out / "chat_template.jinja").read_text() if (out / "chat_template.jinja").is_file() else None
    in_config = json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    return load_tokenizer(out), template, in_config


@pytest.mark.parametrize("thinking", ["keep", "strip_history", "drop"])
def test_export_thinking_serves_every_turn_as_trained(imported, tmp_path, fast_tok, thinking):
    hf, template, in_config = _export(imported, tmp_path / "hf", thinking)
    assert template == in_config == chat_template(thinking)
    assert _check(hf, fast_tok, thinking) > 60


def test_trained_run_exports_its_recorded_policy_and_imported_keeps_the_source(imported, tmp_path, fast_tok):
    from nemo_terminal.checkpoint.directory import write_training_data

    hf, template, in_config = _export(imported, tmp_path / "untouched")
    assert in_config == published_qwen3_template() and template in (None, in_config)
    with pytest.raises(AssertionError):  # the trap: Qwen3's template drops history reasoning keep trained on
        _check(hf, fast_tok, "keep", forms=("inline",))
    _check(hf, fast_tok, "strip_history", forms=("inline",))  # stock history is what strip_history trains
    write_training_data(imported, "keep", ["data/a"])  # as a training run records it
    try:
        _, template, in_config = _export(imported, tmp_path / "trained")
    finally:
        (imported / "training_data.json").unlink()
    assert template == in_config == chat_template("keep")


def test_drop_serves_qwen3_non_thinking_mode(imported, tmp_path):
    hf, _, _ = _export(imported, tmp_path / "hf", "drop")
    msgs = [{"role": "user", "content": "ls"}]
    assert hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n" + EMPTY_THINK)
    assert hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=True).endswith(
        "<|im_start|>assistant\n")


@pytest.mark.parametrize("content, reason", [
    ("<think>\nR\n</think>\n\nA", None), ("R</think>A", None), ("\n<think>R</think>A", None), ("A", None),
    ("<think>unterminated", None), ("x<think>R</think>A", "malformed_think"),
    ("<think>R</think>A</think>", "malformed_think"), ("<think><think>R</think>A", "malformed_think"),
    ("\nA", "answer_starts_with_newline"),  # "\n\n" would be one token with the header's "\n"
])
def test_turns_that_cannot_be_rendered_faithfully_are_named_not_mangled(fast_tok, content, reason):
    assert think_is_well_formed(content) is (reason != "malformed_think")
    renderer = ChatRenderer(fast_tok, "keep", 1 << 20, "truncate_turns")
    doc = renderer.render_many([[("user", "u"), ("assistant", content)]])[0]
    assert isinstance(doc, Document) if reason is None else doc == reason
