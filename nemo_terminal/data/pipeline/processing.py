"""The per-record work of prepare: validate, filter, render, pad. Runs in worker processes.

Workers see chunks of rows in order and return results in the same order (`Pool.imap`), so the
output is identical for any number of workers. Dedup needs state shared by all records and is
done by the caller, from the hash each result carries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from nemo_terminal.data.pipeline.filters import RecordFilter, conversation_hash
from nemo_terminal.data.pipeline.pack import pad_document
from nemo_terminal.data.pipeline.config import PrepareConfig
from nemo_terminal.data.pipeline.readers import BadRow, Row
from nemo_terminal.models.chat import ChatRenderer, Document
from nemo_terminal.data.pipeline.validate import validate_record


@dataclass
class Result:
    """One record's outcome: a drop reason, or a padded document ready to pack."""

    reason: Optional[str] = None
    detail: str = ""
    tokens: Optional[np.ndarray] = None  # int32, padded
    mask: Optional[np.ndarray] = None  # uint8, padded
    length: int = 0  # unpadded
    loss_tokens: int = 0
    assistant_turns: int = 0
    truncated: bool = False
    full_length: int = 0
    dedup_hash: Optional[int] = None


class Processor:
    """Holds the tokenizer and filters of one process."""

    def __init__(self, tokenizer_dir: str, cfg: PrepareConfig, benchmark_index: Optional[np.ndarray],
                 pad_multiple: int):
        from tokenizers import Tokenizer

        self.cfg = cfg
        tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
        self.renderer = ChatRenderer(tok, cfg.thinking, cfg.seq_length, cfg.length_policy)
        self.filter = RecordFilter(cfg.filters, benchmark_index)
        self.multiple = pad_multiple  # computed by the parent: keeps torch (via runtime) out of workers

    def process(self, rows: list[Row]) -> list[Result]:
        results: list[Optional[Result]] = [None] * len(rows)
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
        for i, turns, doc in zip(todo, turns_list, self.renderer.render_many(turns_list)):
            if not isinstance(doc, Document):
                results[i] = Result(reason=doc)
                continue
            tokens, mask, n = pad_document(doc.tokens, doc.mask, self.multiple, self.renderer.pad_id)
            results[i] = Result(
                tokens=tokens, mask=mask, length=n, loss_tokens=int(doc.mask.sum()),
                assistant_turns=doc.assistant_turns, truncated=doc.truncated, full_length=doc.full_length,
                dedup_hash=conversation_hash(turns) if self.cfg.filters.dedup else None,
            )
        return results  # type: ignore[return-value]


_PROCESSOR: Optional[Processor] = None


def init_worker(tokenizer_dir: str, cfg: PrepareConfig, benchmark_index: Optional[np.ndarray],
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
