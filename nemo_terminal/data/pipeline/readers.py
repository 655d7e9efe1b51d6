"""Streaming readers for trajectory inputs: parquet, JSONL, `datasets.save_to_disk` dirs, hub names.

Every reader yields one record at a time from bounded-size batches (pyarrow `iter_batches`,
Arrow IPC streams, line by line), so memory does not grow with the corpus. A row that cannot
even be decoded (bad JSON, invalid UTF-8, no `conversations`/`messages`) is yielded as a `BadRow`
so the caller counts it under a reason instead of dying on it. A file that cannot be read at all
(corrupt parquet, a JSON array that is not UTF-8) raises `BadInputFile` naming it; prepare then
stops or skips it as `on_bad_file` says. A `.json` file may be JSON Lines or one JSON array of
records; a UTF-8 byte-order mark is ignored.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nemo_terminal.data.pipeline.origins import origin_of
from nemo_terminal.errors import UserError
from nemo_terminal.output_dir import looks_local

BATCH_ROWS = 64  # rows per Arrow batch: large records are ~100 KB, so this bounds memory at a few MB
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$")
CONVERSATION_COLUMNS = ("conversations", "messages")  # the first one present is read


class BadInputFile(UserError):
    """An input file that cannot be read at all; the message names it and the cause."""


@dataclass(frozen=True)
class InputFile:
    """One unit of input, counted separately in the report."""

    path: str
    kind: str  # parquet | jsonl | json | arrow | hub
    origin: str = ""  # see origins.py; packed into its own sub-dataset


@dataclass(frozen=True)
class BadRow:
    """A row that could not be decoded into a record (or failed filters.require_success)."""

    reason: str  # invalid_utf8 | malformed | unsuccessful
    detail: str


Row = list | BadRow  # a `conversations` value (unchecked) or a BadRow


def _save_to_disk_files(d: Path, split: str = "train") -> list[InputFile]:
    """The Arrow files of a `save_to_disk` directory (a Dataset, or one split of a DatasetDict).

    `datasets.load_from_disk` only memory-maps them; we then stream each file ourselves so every
    file is hashed and counted on its own.
    """
    import datasets  # lazy: 0.9 s to import, for save_to_disk inputs only

    loaded = datasets.load_from_disk(str(d))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise UserError(f"--input {d}: the DatasetDict has no split {split!r}; available: "
                            f"{sorted(loaded)}; choose one with --split")
        loaded = loaded[split]
    return [InputFile(f["filename"], "arrow") for f in loaded.cache_files]


def _expand_dir(d: Path, split: str) -> list[InputFile]:
    if (d / "dataset_dict.json").is_file() or (d / "state.json").is_file():  # datasets' save_to_disk
        return _save_to_disk_files(d, split)
    found = sorted(p for p in d.rglob("*") if p.suffix in (".parquet", ".jsonl", ".json") and p.is_file())
    return [InputFile(str(p), "parquet" if p.suffix == ".parquet" else p.suffix[1:]) for p in found]


def resolve_inputs(paths: list[str], split: str = "train") -> list[InputFile]:
    """Expand files, directories and hub names into an ordered list of inputs, each with its origin."""
    if not paths:
        raise UserError("no --input given: pass parquet/JSONL files, directories or a dataset name")
    return [replace(f, origin=origin_of(f.path, raw)) for raw in paths for f in _resolve_one(raw, split)]


def _resolve_one(raw: str, split: str) -> list[InputFile]:
    p = Path(raw)
    if p.is_dir():
        found = _expand_dir(p, split)
        if not found:
            raise UserError(f"--input {raw}: directory holds no .parquet, .jsonl, .json or save_to_disk data")
        return found
    if p.is_file():
        kinds = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "json", ".arrow": "arrow"}
        if p.suffix not in kinds:
            raise UserError(f"--input {raw}: unknown file type {p.suffix!r}; use .parquet, .jsonl, .json or .arrow")
        return [InputFile(str(p), kinds[p.suffix])]
    if _HUB_NAME.match(raw) and not looks_local(raw):
        return [InputFile(raw, "hub")]
    raise UserError(f"--input {raw}: no such file or directory (a local path, not a Hub dataset name)")


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


SUCCESS_REWARD = 1.0  # filters.require_success: every test passed


def _gate(row: Row, reward: Any, where: str) -> Row:
    """filters.require_success: a row without a reward >= 1 becomes a counted `unsuccessful` drop."""
    if isinstance(row, BadRow) or (isinstance(reward, (int, float)) and reward >= SUCCESS_REWARD):
        return row
    return BadRow("unsuccessful", f"{where}: reward {reward!r}")


def _reward_column(path: str, names: list[str]) -> None:
    if "reward" not in names:
        raise UserError(f"{path}: filters.require_success needs a `reward` column (taskgen collect writes it); "
                        f"columns: {names}")


def _conversation_column(path: str, names: list[str]) -> str:
    for name in CONVERSATION_COLUMNS:
        if name in names:
            return name
    raise UserError(f"{path}: no `conversations` or `messages` column (columns: {names})")


def _iter_parquet(path: str, require_success: bool = False) -> Iterator[Row]:
    import pyarrow.parquet as pq  # lazy: 0.11 s; prepare's workers import this module, never read a file

    pf = pq.ParquetFile(path)
    column = _conversation_column(path, pf.schema_arrow.names)
    if require_success:
        _reward_column(path, pf.schema_arrow.names)
    columns = [column, "reward"] if require_success else [column]
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        rows = _rows_from_arrow_column(batch.column(0), path)
        if require_success:
            rows = (_gate(r, w, path) for r, w in zip(rows, batch.column(1).to_pylist(), strict=True))
        yield from rows


def _iter_arrow(path: str, require_success: bool = False) -> Iterator[Row]:
    import pyarrow as pa  # lazy: 0.1 s; prepare's workers import this module, never read a file

    with pa.memory_map(path) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            batches = iter(reader)
        for batch in batches:
            rows = _rows_from_arrow_column(batch.column(_conversation_column(path, batch.schema.names)), path)
            if require_success:
                _reward_column(path, batch.schema.names)
                rows = (_gate(r, w, path) for r, w in zip(rows, batch.column("reward").to_pylist(), strict=True))
            yield from rows


def _record(obj: Any, where: str, require_success: bool) -> Row:
    """The conversation of one JSON record (`conversations` or `messages`), or a BadRow."""
    column = next((c for c in CONVERSATION_COLUMNS if c in obj), None) if isinstance(obj, dict) else None
    if column is None:
        return BadRow("malformed", f"{where}: not an object with `conversations` or `messages`")
    return _gate(obj[column], obj.get("reward"), where) if require_success else obj[column]


def _iter_jsonl(path: str, require_success: bool = False) -> Iterator[Row]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
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
            yield _record(obj, f"{path}:{lineno}", require_success)


def _iter_json(path: str, require_success: bool = False) -> Iterator[Row]:
    """A `.json` file: one JSON array of records (read whole), else JSON Lines."""
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(codecs.BOM_UTF8).lstrip()
    if not head.startswith(b"["):
        yield from _iter_jsonl(path, require_success)
        return
    try:
        records = json.loads(Path(path).read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise BadInputFile(f"{path}: not UTF-8 ({err}); convert it, e.g. `iconv -f latin1 -t utf-8`") from None
    except json.JSONDecodeError as err:
        raise BadInputFile(f"{path}: not a valid JSON array of records ({err})") from None
    for i, obj in enumerate(records):
        yield _record(obj, f"{path}[{i}]", require_success)


def _iter_hub(name: str, require_success: bool = False) -> Iterator[Row]:
    repo, _, config = name.partition(":")
    try:
        import datasets  # lazy: 0.9 s to import, for hub inputs only

        ds = datasets.load_dataset(repo, config or None, split="train", streaming=True)
        for row in ds:
            yield _gate(row.get("conversations"), row.get("reward"), name) if require_success \
                else row.get("conversations")
    except UserError:
        raise
    except Exception as err:  # no hub here: say so in one line, with the fix
        raise UserError(
            f"--input {name}: could not load the dataset from the Hugging Face hub "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); "
            "download its parquet files and pass their paths or directory instead"
        ) from err


def iter_rows(inp: InputFile, require_success: bool = False) -> Iterator[Row]:
    """Rows of one input, in file order (with require_success, failed ones as `unsuccessful` BadRows).
    A file pyarrow cannot read raises `BadInputFile` naming it, whenever the damage is met."""
    import pyarrow as pa  # lazy: 0.1 s; prepare's workers import this module, never read a file

    readers = {"parquet": _iter_parquet, "jsonl": _iter_jsonl, "json": _iter_json, "arrow": _iter_arrow,
               "hub": _iter_hub}
    rows = readers[inp.kind](inp.path, require_success)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except UserError:
            raise
        except (pa.ArrowException, OSError) as err:  # corrupt parquet/arrow: thrift, magic bytes, IO
            text = str(err).strip().splitlines()
            raise BadInputFile(f"{inp.path}: cannot be read as {inp.kind} ({type(err).__name__}: "
                               f"{text[0] if text else ''})") from None
        yield row
