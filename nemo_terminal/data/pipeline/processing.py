"""The per-record work of prepare: validate, filter, render, pad. Runs in worker processes.

Workers see chunks of rows in order and return results in the same order (`Pool.imap`), so the
output is identical for any number of workers. Dedup needs state shared by all records and is
done by the caller, from the hash each result carries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from nemo_terminal.data.pipeline.config import PrepareConfig
from nemo_terminal.data.pipeline.filters import RecordFilter, conversation_hash
from nemo_terminal.data.pipeline.pack import pad_document
from nemo_terminal.data.pipeline.readers import BadRow, Row
from nemo_terminal.data.pipeline.validate import validate_record
from nemo_terminal.errors import UserError
from nemo_terminal.models.chat import ChatRenderer, Document

QWEN_CHAT_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


@dataclass
class Result:
    """One record's outcome: a drop reason, or a padded document ready to pack."""

    reason: str | None = None
    detail: str = ""
    tokens: np.ndarray | None = None  # int32, padded
    mask: np.ndarray | None = None  # uint8, padded
    length: int = 0  # unpadded
    loss_tokens: int = 0
    assistant_turns: int = 0
    truncated: bool = False
    full_length: int = 0
    dedup_hash: int | None = None
    pieces: tuple = ()  # per-turn thinking policies: (padded, unpadded) length of each sample in tokens
    samples_dropped: int = 0  # per-turn samples longer than seq_length
    once_length: int = 0  # per-turn policies: the record's tokens rendered once

    def documents(self) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """(tokens, mask, unpadded length) of each document to pack: the record, or its samples."""
        if not self.pieces:
            return [(self.tokens, self.mask, self.length)]
        out, pos = [], 0
        for padded, length in self.pieces:
            out.append((self.tokens[pos:pos + padded], self.mask[pos:pos + padded], length))
            pos += padded
        return out


class Processor:
    """Holds the tokenizer and filters of one process."""

    def __init__(self, tokenizer_dir: str, cfg: PrepareConfig, benchmark_index: np.ndarray | None,
                 pad_multiple: int):
        self.cfg = cfg
        tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
        missing = [t for t in QWEN_CHAT_TOKENS if tok.token_to_id(t) is None]
        if missing:  # checked here, once per process, so a pool fails fast instead of respawning
            raise UserError(f"{tokenizer_dir}: tokenizer lacks the Qwen3 chat tokens {missing}; "
                            "pass the Qwen3 model's tokenizer directory with --tokenizer")
        self.renderer = ChatRenderer(tok, cfg.thinking, cfg.seq_length, cfg.length_policy)
        self.filter = RecordFilter(cfg.filters, benchmark_index)
        self.multiple = pad_multiple  # computed by the parent: keeps torch (via runtime) out of workers

    def process(self, rows: list[Row]) -> list[Result]:
        results: list[Result | None] = [None] * len(rows)
        todo, turns_list = [], []
        for i, row in enumerate(rows):
            if isinstance(row, BadRow):
                results[i] = Result(reason=row.reason, detail=row.detail)
                continue
            turns, reason = validate_record(row)
            if reason is None:
                reason = self.filter.check(turns)
            if reason is not None:
                results[i] = Result(reason=reason)
                continue
            todo.append(i)
            turns_list.append(turns)
        for i, turns, doc in zip(todo, turns_list, self.renderer.render_many(turns_list), strict=False):
            if not isinstance(doc, Document):
                results[i] = Result(reason=doc)
                continue
            padded = [pad_document(t, m, self.multiple, self.renderer.pad_id) for t, m in doc.samples()]
            tokens, mask = (padded[0][k] if len(padded) == 1 else np.concatenate([p[k] for p in padded])
                            for k in (0, 1))
            results[i] = Result(
                tokens=tokens, mask=mask, length=sum(p[2] for p in padded), loss_tokens=int(doc.mask.sum()),
                assistant_turns=doc.assistant_turns, truncated=doc.truncated, full_length=doc.full_length,
                pieces=tuple((len(p[0]), p[2]) for p in padded) if doc.sample_lengths else (),
                samples_dropped=doc.samples_dropped, once_length=doc.once_length,
                dedup_hash=conversation_hash(turns) if self.cfg.filters.dedup else None,
            )
        return results  # type: ignore[return-value]


_PROCESSOR: Processor | None = None


def init_worker(tokenizer_dir: str, cfg: PrepareConfig, benchmark_index: np.ndarray | None,
                pad_multiple: int, in_pool: bool) -> None:
    """Pool initializer (also used in-process). In a pool, the pool is the parallelism: keep each
    worker's tokenizer single-threaded so N workers use N cores, not N × cores."""
    global _PROCESSOR
    if in_pool:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _PROCESSOR = Processor(tokenizer_dir, cfg, benchmark_index, pad_multiple)


def process_chunk(chunk: tuple[list, list[Row]]) -> tuple[list, list[Result]]:
    """(metadata, rows) -> (metadata, results); metadata travels along untouched."""
    meta, rows = chunk
    assert _PROCESSOR is not None, "init_worker was not called"
    return meta, _PROCESSOR.process(rows)
