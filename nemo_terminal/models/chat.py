"""Render a conversation in the Qwen3 chat format with its loss mask: what training sees.

The one rule for what a model is trained on, shared with the chat template `export` writes
(models/chat_template.py renders the same text from OpenAI-style messages):

- Each turn is `<|im_start|>{role}\\n{text}<|im_end|>\\n`. A turn's `role\\n{text}` is tokenized
  as one piece, exactly as a tokenizer sees it in the full rendered string (the control tokens
  split it from its neighbours), so a serving prompt re-tokenized by vLLM gives the same ids.
- An assistant turn's `<think>` block is normalised once, by `split_reasoning` + `join_reasoning`.
- Trained: the assistant text after `<|im_start|>assistant\\n` (after the empty think block under
  `drop`) and its `<|im_end|>`. Role headers, the `\\n` after `<|im_end|>` and other turns are 0.

Thinking policies (`THINKING_POLICIES`):

- `keep`: one document per record; every assistant turn, in history too, carries its reasoning.
- `strip_history`: one sample per assistant turn: the history as Qwen3's stock template renders
  it (earlier reasoning removed), then the turn with its reasoning. Each sample is its own
  document; one that exceeds seq_length is dropped and counted, never truncated.
- `drop`: one sample per assistant turn, as Qwen3's non-thinking mode renders it: stock history,
  then `<think>\\n\\n</think>\\n\\n` (context, untrained) and the answer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from nemo_terminal.options import ThinkingPolicy

Turns = list[tuple[str, str]]  # (role, content), validated

THINKING_POLICIES = ThinkingPolicy.values()  # the one list: nemo_terminal/options.py
PER_TURN_POLICIES = ("strip_history", "drop")
EMPTY_THINK = "<think>\n\n</think>\n\n"  # Qwen3's non-thinking prefix
# Normalizers (tokenizers' class names) that leave every ASCII text unchanged.
ASCII_NOOP_NORMALIZERS = ("NFC", "NFD", "NFKC", "NFKD")

# Reasons a record is dropped while rendering (report.json counts them).
LENGTH_REASONS = {
    "too_long": "longer than seq_length under length_policy=drop",
    "first_turn_too_long": "the first user turn and first assistant answer do not fit in seq_length "
                           "(truncate_turns), or the first user turn leaves no room for a trained token (truncate)",
    "no_turn_fits": "strip_history/drop: no assistant turn fits in seq_length together with its context",
    "malformed_think": "an assistant turn has a second <think> or </think>, or text before <think>: "
                       "normalising its reasoning would lose text",
    "answer_starts_with_newline": "an assistant turn starts with a newline after its reasoning is normalised; "
                                  "it would tokenize together with the role header",
}


def split_reasoning(content: str, reasoning_content: str | None = None) -> tuple[str | None, str]:
    """(reasoning or None, answer) of an assistant message, by Qwen3's template rule: a separate
    `reasoning_content` string wins; else the text before `</think>` (after `<think>`) is the
    reasoning and the text after it the answer. With reasoning, leading newlines of the answer are
    not part of it (vLLM's qwen3 parser leaves them on `content`)."""
    if isinstance(reasoning_content, str):
        return reasoning_content, content.lstrip("\n")
    head, sep, _ = content.partition("</think>")  # partition, not split: no copy of every piece
    if sep:
        reasoning = head.rstrip("\n").rpartition("<think>")[2].lstrip("\n")
        return reasoning, content.rpartition("</think>")[2].lstrip("\n")
    return None, content


def join_reasoning(reasoning: str | None, answer: str) -> str:
    """The canonical assistant text: `<think>\\n{reasoning}\\n</think>\\n\\n{answer}`. With reasoning
    (even blank) the answer loses its leading newlines; blank reasoning renders no block. Used for
    training targets, mirrored by the exported template, and the one way to build a trajectory
    turn from an API's (reasoning_content, content) pair."""
    if reasoning is None:
        return answer
    answer, reasoning = answer.lstrip("\n"), reasoning.strip("\n")
    return f"<think>\n{reasoning}\n</think>\n\n{answer}" if reasoning else answer


def strip_think(content: str) -> str:
    """The answer without its reasoning, as Qwen3's template renders history turns."""
    return split_reasoning(content)[1]


def think_is_well_formed(content: str) -> bool:
    """False when `split_reasoning` would lose text: a second `<think>`/`</think>`, or non-blank
    text before `<think>`."""
    end = content.find("</think>")
    if end < 0:
        return True
    start = content.find("<think>")
    if content.find("</think>", end + 1) >= 0 or (start >= 0 and content.find("<think>", start + 1) >= 0):
        return False  # a second </think> or <think>
    return not 0 <= start < end or not content[:start].strip()


@dataclass
class Document:
    """One rendered record, unpadded. Under a per-turn policy `tokens`/`mask` hold its samples
    back to back and `sample_lengths` says where each ends; every sample is its own document."""

    tokens: np.ndarray  # int32 [n]
    mask: np.ndarray  # uint8 [n]: 1 = training target
    assistant_turns: int  # assistant turns trained
    truncated: bool  # the length policy shortened it
    full_length: int  # tokens before truncation
    sample_lengths: tuple[int, ...] = ()  # per-turn policies: one entry per sample
    samples_dropped: int = 0  # per-turn samples longer than seq_length
    once_length: int = 0  # per-turn policies: tokens of the record rendered once, each turn as trained

    def samples(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(tokens, mask) per document to pack: the samples, or the whole record."""
        bounds = np.cumsum((0, *(self.sample_lengths or (len(self.tokens),))))
        return [(self.tokens[a:b], self.mask[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=False)]


Rendered = Document | str  # a Document, or a drop reason from LENGTH_REASONS


@dataclass
class _Turn:
    """A turn's token ids: as history (`hist`, whole turn) and, for assistant turns, as trained
    (`trained`: whole turn; `start`: where the targets begin inside it)."""

    role: str
    hist: list[int]
    trained: list[int]
    start: int


class ChatRenderer:
    """Tokenizes and renders conversations with one backend tokenizer (`tokenizers.Tokenizer`)."""

    def __init__(self, tokenizer: Any, thinking: str, seq_length: int, length_policy: str):
        assert thinking in THINKING_POLICIES, thinking
        self.tok = tokenizer
        self.thinking, self.seq_length, self.length_policy = thinking, seq_length, length_policy
        ids = {t: tokenizer.token_to_id(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>")}
        missing = [t for t, i in ids.items() if i is None]
        assert not missing, f"tokenizer lacks the Qwen chat tokens {missing}"
        self.im_start, self.im_end, self.pad_id = ids["<|im_start|>"], ids["<|im_end|>"], ids["<|endoftext|>"]
        normalizer = getattr(tokenizer, "normalizer", None)
        self._ascii_noop_normalizer = normalizer if type(normalizer).__name__ in ASCII_NOOP_NORMALIZERS else None
        self.newline = self._encode(["\n"])[0]
        self.prefix = EMPTY_THINK if thinking == "drop" else ""
        self.trained_header = self._encode([f"assistant\n{self.prefix}"])[0]

    def _encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text. ASCII texts are encoded with the tokenizer's normalizer switched
        off when it is a Unicode normal form (Qwen3's is NFC): those leave ASCII as it is, so the ids
        are the same, and the normalizer's pass is ~7% of the tokenizer's time (measured)."""
        fast = getattr(self.tok, "encode_batch_fast", None) or self.tok.encode_batch
        is_ascii = [self._ascii_noop_normalizer is not None and t.isascii() for t in texts]
        plain = [t for t, a in zip(texts, is_ascii, strict=True) if a]
        other = [t for t, a in zip(texts, is_ascii, strict=True) if not a]
        plain_ids = other_ids = iter(())
        if plain:
            self.tok.normalizer = None  # restored below; a renderer's tokenizer serves one thread
            try:
                plain_ids = iter([e.ids for e in fast(plain, add_special_tokens=False)])
            finally:
                self.tok.normalizer = self._ascii_noop_normalizer
        if other:
            other_ids = iter([e.ids for e in fast(other, add_special_tokens=False)])
        return [next(plain_ids if a else other_ids) for a in is_ascii]

    def _texts(self, turns: Turns) -> list[str] | None:
        """What to tokenize, per turn: `role\\ntext` as history, and for an assistant turn under a
        per-turn policy also as trained. None when a think block is malformed."""
        texts = []
        for role, content in turns:
            if role != "assistant":
                texts.append(f"{role}\n{content}")
                continue
            if not think_is_well_formed(content):
                return None
            reasoning, answer = split_reasoning(content)
            full = join_reasoning(reasoning, answer)
            if self.thinking == "keep":
                texts.append(f"assistant\n{full}")
                continue
            texts.append(f"assistant\n{answer}")
            texts.append(f"assistant\n{self.prefix}{full if self.thinking == 'strip_history' else answer}")
        return texts

    def render_many(self, records: list[Turns]) -> list[Rendered]:
        """Render a batch of validated conversations with one batched tokenizer call."""
        records = [t[:-1] if t[-1][0] == "user" else t for t in records]  # trailing observations train nothing
        texts = [self._texts(t) for t in records]
        flat = self._encode([x for group in texts if group is not None for x in group])
        out: list[Rendered] = []
        pos = 0
        for turns, group in zip(records, texts, strict=False):
            if group is None:
                out.append("malformed_think")
                continue
            parsed = self._turns(turns, flat[pos:pos + len(group)])
            pos += len(group)
            if isinstance(parsed, str):
                out.append(parsed)
            elif self.thinking == "keep":
                out.append(self._render_record(parsed))
            else:
                out.append(self._render_per_turn(parsed))
        return out

    def _turns(self, turns: Turns, encoded: list[list[int]]) -> list[_Turn] | str:
        parsed, i = [], 0
        head = len(self.trained_header)
        for role, _ in turns:
            hist = encoded[i]
            i += 1
            if role != "assistant":
                parsed.append(_Turn(role, hist, hist, 0))
                continue
            trained = hist
            if self.thinking in PER_TURN_POLICIES:
                trained = encoded[i]
                i += 1
            if trained[:head] != self.trained_header:
                return "answer_starts_with_newline"
            parsed.append(_Turn(role, hist, trained, head))
        return parsed

    def _wrap(self, body: list[int]) -> list[int]:
        return [self.im_start, *body, self.im_end, *self.newline]

    def _render_per_turn(self, turns: list[_Turn]) -> Rendered:
        """One sample per assistant turn: stock history + the turn as trained."""
        context: list[int] = []
        tokens: list[int] = []
        spans: list[tuple[int, int]] = []
        lengths: list[int] = []
        dropped = 0
        once = 0
        for t in turns:
            once += len(t.trained) + 2 + len(self.newline)
            if t.role == "assistant":
                sample = context + self._wrap(t.trained)
                if len(sample) <= self.seq_length:
                    a = len(tokens) + len(context) + 1 + t.start
                    spans.append((a, a + len(t.trained) - t.start + 1))
                    tokens += sample
                    lengths.append(len(sample))
                else:
                    dropped += 1
            context += self._wrap(t.hist)
        if not lengths:
            return "no_turn_fits"
        arr = np.asarray(tokens, dtype=np.int32)
        mask = np.zeros(len(arr), dtype=np.uint8)
        for a, b in spans:
            mask[a:b] = 1
        return Document(arr, mask, len(lengths), False, len(arr), tuple(lengths), dropped, once)

    def _choose_end(self, lengths: list[int], roles: list[str]) -> tuple[int, int]:
        """(turns kept, rendered length): the whole record, or under truncate_turns the longest
        prefix that ends on an assistant turn and fits ((0, 0) when none does)."""
        if self.length_policy != "truncate_turns":
            return len(lengths), sum(lengths)
        best, prefix = (0, 0), 0
        for t, (role, n) in enumerate(zip(roles, lengths, strict=False)):
            prefix += n
            if role == "assistant" and prefix <= self.seq_length:
                best = (t + 1, prefix)
        return best

    def _render_record(self, turns: list[_Turn]) -> Rendered:
        """keep: the record as one document, every assistant turn trained with its reasoning."""
        lengths = [len(t.hist) + 2 + len(self.newline) for t in turns]
        full_length = sum(lengths)
        n_turns, length = self._choose_end(lengths, [t.role for t in turns])
        if n_turns == 0:
            return "first_turn_too_long"
        if self.length_policy == "drop" and length > self.seq_length:
            return "too_long"
        pieces: list[list[int]] = []  # the turns' ids, wrapped: joined once, straight into the array
        spans: list[tuple[int, int]] = []  # [start, stop) of trained tokens
        head, tail, pos = [self.im_start], [self.im_end, *self.newline], 0
        for t, n in zip(turns[:n_turns], lengths, strict=False):
            if t.role == "assistant":
                a = pos + 1 + t.start
                spans.append((a, a + len(t.hist) - t.start + 1))
            pieces += (head, t.hist, tail)
            pos += n
        assert pos == length, (pos, length)
        tokens_arr = np.fromiter(itertools.chain.from_iterable(pieces), np.int32, length)
        mask = np.zeros(len(tokens_arr), dtype=np.uint8)
        for a, b in spans:
            mask[a:b] = 1
        truncated = n_turns < len(turns)
        if self.length_policy == "truncate" and len(tokens_arr) > self.seq_length:
            tokens_arr, mask, truncated = tokens_arr[:self.seq_length], mask[:self.seq_length], True
            if not mask.any():
                return "first_turn_too_long"
        assistant_turns = sum(1 for t in turns[:n_turns] if t.role == "assistant")
        return Document(tokens_arr, mask, assistant_turns, truncated, full_length)
