"""Streaming readers for trajectory inputs: parquet, JSONL, `datasets.save_to_disk` dirs, hub names.

Every reader yields one record at a time from bounded-size batches (pyarrow `iter_batches`,
Arrow IPC streams, line by line), so memory does not grow with the corpus. A row that cannot
even be decoded (bad JSON, invalid UTF-8, no `conversations`) is yielded as a `BadRow` so the
caller counts it under a reason instead of dying on it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Union

from nemo_terminal.errors import UserError

BATCH_ROWS = 64  # rows per Arrow batch: large records are ~100 KB, so this bounds memory at a few MB
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$")


@dataclass(frozen=True)
class InputFile:
    """One unit of input, counted separately in the report."""

    path: str
    kind: str  # parquet | jsonl | arrow | hub


@dataclass(frozen=True)
class BadRow:
    """A row that could not be decoded into a record."""

    reason: str  # invalid_utf8 | malformed
    detail: str


Row = Union[list, BadRow]  # a `conversations` value (unchecked) or a BadRow


def _expand_dir(d: Path) -> list[InputFile]:
    if (d / "dataset_dict.json").is_file():  # DatasetDict.save_to_disk: one subdir per split
        splits = json.loads((d / "dataset_dict.json").read_text()).get("splits", [])
        return [f for s in splits for f in _expand_dir(d / s)]
    if (d / "state.json").is_file():  # Dataset.save_to_disk
        state = json.loads((d / "state.json").read_text())
        return [InputFile(str(d / f["filename"]), "arrow") for f in state.get("_data_files", [])]
    found = sorted(p for p in d.rglob("*") if p.suffix in (".parquet", ".jsonl") and p.is_file())
    return [InputFile(str(p), "parquet" if p.suffix == ".parquet" else "jsonl") for p in found]


def resolve_inputs(paths: list[str]) -> list[InputFile]:
    """Expand files, directories and hub names into an ordered list of inputs."""
    if not paths:
        raise UserError("no --input given: pass parquet/JSONL files, directories or a dataset name")
    out: list[InputFile] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = _expand_dir(p)
            if not found:
                raise UserError(f"--input {raw}: directory holds no .parquet, .jsonl or save_to_disk data")
            out += found
        elif p.is_file():
            if p.suffix == ".parquet":
                out.append(InputFile(str(p), "parquet"))
            elif p.suffix in (".jsonl", ".json"):
                out.append(InputFile(str(p), "jsonl"))
            elif p.suffix == ".arrow":
                out.append(InputFile(str(p), "arrow"))
            else:
                raise UserError(f"--input {raw}: unknown file type {p.suffix!r}; use .parquet, .jsonl or .arrow")
        elif _HUB_NAME.match(raw) and not raw.startswith((".", "/")):
            out.append(InputFile(raw, "hub"))
        else:
            raise UserError(f"--input {raw}: no such file or directory")
    return out


def file_sha256(inp: InputFile) -> str | None:
    """Content hash of a local input (None for hub names), recorded in the manifest."""
    if inp.kind == "hub":
        return None
    h = hashlib.sha256()
    with open(inp.path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _rows_from_arrow_column(column: Any, where: str) -> Iterator[Row]:
    try:
        values = column.to_pylist()
    except (UnicodeDecodeError, ValueError):  # one bad row spoils the batch: retry row by row
        values = []
        for i in range(len(column)):
            try:
                values.append(column[i].as_py())
            except (UnicodeDecodeError, ValueError) as err:
                values.append(BadRow("invalid_utf8", f"{where}: {err}"))
    yield from values


def _iter_parquet(path: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if "conversations" not in pf.schema_arrow.names:
        raise UserError(f"{path}: no `conversations` column (columns: {pf.schema_arrow.names})")
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=["conversations"]):
        yield from _rows_from_arrow_column(batch.column(0), path)


def _iter_arrow(path: str) -> Iterator[Row]:
    import pyarrow as pa

    with pa.memory_map(path) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            batches = iter(reader)
        for batch in batches:
            if "conversations" not in batch.schema.names:
                raise UserError(f"{path}: no `conversations` column (columns: {batch.schema.names})")
            yield from _rows_from_arrow_column(batch.column("conversations"), path)


def _iter_jsonl(path: str) -> Iterator[Row]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield BadRow("invalid_utf8", f"{path}:{lineno}: {err}")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as err:
                yield BadRow("malformed", f"{path}:{lineno}: bad JSON: {err}")
                continue
            if not isinstance(obj, dict) or "conversations" not in obj:
                yield BadRow("malformed", f"{path}:{lineno}: not an object with `conversations`")
                continue
            yield obj["conversations"]


def _iter_hub(name: str) -> Iterator[Row]:
    repo, _, config = name.partition(":")
    try:
        import datasets

        ds = datasets.load_dataset(repo, config or None, split="train", streaming=True)
        for row in ds:
            yield row.get("conversations")
    except UserError:
        raise
    except Exception as err:  # no hub here: say so in one line, with the fix
        raise UserError(
            f"--input {name}: could not load the dataset from the Hugging Face hub "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); "
            "download its parquet files and pass their paths or directory instead"
        ) from None


def iter_rows(inp: InputFile) -> Iterator[Row]:
    """Rows of one input, in file order."""
    readers = {"parquet": _iter_parquet, "jsonl": _iter_jsonl, "arrow": _iter_arrow, "hub": _iter_hub}
    return readers[inp.kind](inp.path)
