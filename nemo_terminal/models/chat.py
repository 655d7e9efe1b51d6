"""Render a conversation in the Qwen3 chat format with its loss mask, then apply the length policy.

Each turn is `<|im_start|>{role}\\n{content}<|im_end|>\\n`. Turn contents are tokenized whole,
one text per turn, and the control tokens are inserted by id, so turn boundaries (and with them
the mask) are known exactly: nothing is searched for in a rendered string. The mask marks
training targets: assistant content and its `<|im_end|>`; role headers, the `\\n` after
`<|im_end|>` and all user turns are 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import numpy as np


Turns = list[tuple[str, str]]  # (role, content), validated

LENGTH_REASONS = {
    "too_long": "longer than seq_length under length_policy=drop",
    "first_turn_too_long": "the first user turn and first assistant answer do not fit in seq_length "
                           "(truncate_turns), or the first user turn leaves no room for a trained token (truncate)",
}


def strip_think(content: str) -> str:
    """The answer without its reasoning, as Qwen3's template renders history turns."""
    if "</think>" in content:
        return content.split("</think>")[-1].lstrip("\n")
    return content


@dataclass
class Document:
    """One rendered trajectory, unpadded."""

    tokens: np.ndarray  # int32 [n]
    mask: np.ndarray  # uint8 [n]: 1 = training target
    assistant_turns: int  # assistant turns kept
    truncated: bool  # the length policy shortened it
    full_length: int  # tokens before truncation


Rendered = Union[Document, str]  # a Document, or a drop reason from LENGTH_REASONS


class ChatRenderer:
    """Tokenizes and renders conversations with one backend tokenizer (`tokenizers.Tokenizer`)."""

    def __init__(self, tokenizer: Any, thinking: str, seq_length: int, length_policy: str):
        self.tok = tokenizer
        self.thinking, self.seq_length, self.length_policy = thinking, seq_length, length_policy
        ids = {t: tokenizer.token_to_id(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>")}
        missing = [t for t, i in ids.items() if i is None]
        assert not missing, f"tokenizer lacks the Qwen chat tokens {missing}"
        self.im_start, self.im_end, self.pad_id = ids["<|im_start|>"], ids["<|im_end|>"], ids["<|endoftext|>"]
        self.header = {r: [self.im_start] + self._encode([f"{r}\n"])[0] for r in ("user", "assistant")}
        self.newline = self._encode(["\n"])[0]

    def _encode(self, texts: list[str]) -> list[list[int]]:
        fast = getattr(self.tok, "encode_batch_fast", None) or self.tok.encode_batch
        return [e.ids for e in fast(texts, add_special_tokens=False)]

    def _texts(self, turns: Turns) -> list[str]:
        """What to tokenize: every turn's content; under strip_history each assistant turn twice
        (with and without reasoning) because which turn ends up last depends on truncation."""
        texts = []
        for role, content in turns:
            if role == "assistant" and self.thinking == "drop":
                texts.append(strip_think(content))
            else:
                texts.append(content)
            if role == "assistant" and self.thinking == "strip_history":
                texts.append(strip_think(content))
        return texts

    def render_many(self, records: list[Turns]) -> list[Rendered]:
        """Render a batch of validated conversations with one batched tokenizer call."""
        records = [t[:-1] if t[-1][0] == "user" else t for t in records]  # trailing observations train nothing
        texts = [self._texts(t) for t in records]
        flat = self._encode([x for group in texts for x in group])
        out, pos = [], 0
        for turns, group in zip(records, texts):
            out.append(self._render(turns, flat[pos:pos + len(group)]))
            pos += len(group)
        return out

    def _pieces(self, turns: Turns, encoded: list[list[int]]) -> list[tuple[str, list[int], list[int]]]:
        """Per turn: (role, content ids with reasoning, content ids under the history rule)."""
        pieces, i = [], 0
        for role, _ in turns:
            full = encoded[i]
            i += 1
            hist = full
            if role == "assistant" and self.thinking == "strip_history":
                hist = encoded[i]
                i += 1
            pieces.append((role, full, hist))
        return pieces

    def _choose_end(self, pieces: list, lengths_full: list[int], lengths_hist: list[int]) -> tuple[int, int]:
        """(turns kept, rendered length): the whole record, or under truncate_turns the longest
        prefix that ends on an assistant turn and fits ((0, 0) when none does)."""
        if self.length_policy != "truncate_turns":
            return len(pieces), sum(lengths_hist[:-1]) + lengths_full[-1]
        best, prefix = (0, 0), 0
        for t, (role, _, _) in enumerate(pieces):
            if role == "assistant" and prefix + lengths_full[t] <= self.seq_length:
                best = (t + 1, prefix + lengths_full[t])
            prefix += lengths_hist[t]
        return best

    def _render(self, turns: Turns, encoded: list[list[int]]) -> Rendered:
        pieces = self._pieces(turns, encoded)
        overhead = {r: len(h) + 1 + len(self.newline) for r, h in self.header.items()}
        lengths_full = [overhead[r] + len(f) for r, f, _ in pieces]
        lengths_hist = [overhead[r] + len(h) for r, _, h in pieces]
        full_length = sum(lengths_hist[:-1]) + lengths_full[-1]  # the last turn is an assistant turn
        n_turns, length = self._choose_end(pieces, lengths_full, lengths_hist)
        if n_turns == 0:
            return "first_turn_too_long"
        if self.length_policy == "drop" and length > self.seq_length:
            return "too_long"
        tokens: list[int] = []
        spans: list[tuple[int, int]] = []  # [start, stop) of trained tokens
        for t in range(n_turns):
            role, full, hist = pieces[t]
            content = full if t == n_turns - 1 else hist
            tokens += self.header[role]
            start = len(tokens)
            tokens += content
            tokens.append(self.im_end)
            if role == "assistant":
                spans.append((start, len(tokens)))
            tokens += self.newline
        assert len(tokens) == length, (len(tokens), length)
        tokens_arr = np.asarray(tokens, dtype=np.int32)
        mask = np.zeros(len(tokens_arr), dtype=np.uint8)
        for a, b in spans:
            mask[a:b] = 1
        truncated = n_turns < len(pieces)
        if self.length_policy == "truncate" and len(tokens_arr) > self.seq_length:
            tokens_arr, mask, truncated = tokens_arr[:self.seq_length], mask[:self.seq_length], True
            if not mask.any():
                return "first_turn_too_long"
        assistant_turns = sum(1 for r, _, _ in pieces[:n_turns] if r == "assistant")
        return Document(tokens_arr, mask, assistant_turns, truncated, full_length)
