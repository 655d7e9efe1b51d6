"""Content hashes of checkpoint files: recorded at save, checked before a load or export.

`iter_XXXXXXX/nemo_terminal_hashes.json` holds, for every file of the checkpoint, its size
and its xxh3-128 hash (8 GB/s on one core against sha256's 0.6 GB/s here: corruption, not
tampering, is what this detects; anyone who can rewrite a file can rewrite this one).
The work is split across ranks: rank r hashes files r, r+world, ... of the sorted list.

`problems()` finds what is wrong with a checkpoint: files that `.metadata` or the hash
record name but that are missing, short, or hash differently. A checkpoint without a
hash record (older, or from another tool) gets the structural checks and one printed
line saying its content cannot be checked.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import xxhash

from nemo_terminal.checkpoint.safe_pickle import read_dcp_metadata
from nemo_terminal.errors import UserError

HASH_FILE = "nemo_terminal_hashes.json"
ALGORITHM = "xxh3_128"
_BLOCK = 16 * 2**20

log = logging.getLogger(__name__)


def hash_file(path: Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_BLOCK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def checkpoint_files(iter_dir: Path) -> list[str]:
    """The files a checkpoint consists of (the hash record itself excluded), sorted."""
    return sorted(p.name for p in Path(iter_dir).iterdir() if p.is_file() and p.name != HASH_FILE)


def hash_share(iter_dir: Path, names: list[str], rank: int = 0, world: int = 1) -> dict[str, dict]:
    """{name: {size, hash}} for this rank's share of `names`."""
    out = {}
    for name in names[rank::world]:
        path = Path(iter_dir) / name
        out[name] = {"size": path.stat().st_size, ALGORITHM: hash_file(path)}
    return out


def write_record(iter_dir: Path, entries: dict[str, dict]) -> None:
    """Write the hash record (atomically: a reader sees the whole file or none)."""
    record = {"algorithm": ALGORITHM, "files": dict(sorted(entries.items()))}
    tmp = Path(iter_dir) / f".{HASH_FILE}.tmp.{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, Path(iter_dir) / HASH_FILE)


def record_hashes(iter_dir: Path) -> None:
    """Hash every file of a checkpoint written by this one process (import)."""
    write_record(iter_dir, hash_share(iter_dir, checkpoint_files(iter_dir)))


def read_record(iter_dir: Path) -> dict[str, dict] | None:
    path = Path(iter_dir) / HASH_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("algorithm") != ALGORITHM:
            raise ValueError(f"unknown algorithm {record.get('algorithm')!r}")
        return dict(record["files"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{path} is unreadable ({err}): the checkpoint's integrity record is damaged") from None


def _dcp_files(iter_dir: Path) -> dict[str, int]:
    """{file: minimum size} of the data files `.metadata` points into."""
    need: dict[str, int] = {}
    for info in read_dcp_metadata(iter_dir).storage_data.values():
        need[info.relative_path] = max(need.get(info.relative_path, 0), info.offset + info.length)
    return need


def structural_problems(iter_dir: Path) -> list[str]:
    """Cheap checks, no hashing: metadata files present, every data file `.metadata` names
    present and long enough, every file of the hash record present with its size."""
    iter_dir = Path(iter_dir)
    for name in ("metadata.json", ".metadata"):
        if not (iter_dir / name).is_file():
            return [f"{name} is missing"]
    found = []
    for name, size in _dcp_files(iter_dir).items():
        path = iter_dir / name
        if not path.is_file():
            found.append(f"{name} is missing")
        elif path.stat().st_size < size:
            found.append(f"{name} is truncated ({path.stat().st_size} bytes, .metadata needs {size})")
    for name, entry in (read_record(iter_dir) or {}).items():
        path = iter_dir / name
        if not path.is_file():
            found.append(f"{name} is missing")
        elif path.stat().st_size != entry["size"]:
            found.append(f"{name} has {path.stat().st_size} bytes, {entry['size']} when saved")
    return sorted(set(found))


def hash_problems(iter_dir: Path, rank: int = 0, world: int = 1) -> list[str]:
    """This rank's share of the content check: files whose hash differs from the record."""
    record = read_record(iter_dir) or {}
    names = sorted(n for n in record if (Path(iter_dir) / n).is_file())
    found = []
    for name in names[rank::world]:
        if hash_file(Path(iter_dir) / name) != record[name][ALGORITHM]:
            found.append(f"{name} differs from its content hash at save (corrupted)")
    return found


def say_if_unchecked(iter_dir: Path) -> bool:
    """Print one line when the checkpoint carries no hash record; return whether it has one."""
    if (Path(iter_dir) / HASH_FILE).is_file():
        return True
    print(f"note: {iter_dir} has no {HASH_FILE} (an older or foreign checkpoint): its integrity cannot be checked",
          flush=True)
    return False
