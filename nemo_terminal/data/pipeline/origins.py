"""Where a record comes from: its origin, taken from the input path, so one prepare serves every mixture.

The Terminal-Corpus names its parts by path (FACTS.md §1): `dataset_adapters/{code,math,swe}.parquet`
and `synthetic_tasks/skill_based/{easy,medium,mixed}/<domain>/data_filtered.parquet`. Their origins
are `dataset_adapters/code` and `skill_based_medium/<domain>`: the dataset's config name and the
domain. Any other input is one origin named after the `--input` it came from (a file's stem, a
directory's name, a hub dataset's name), so shards of one directory stay together. The `source`
column that `code.parquet` carries is not used: it names a record's upstream, not a part of the corpus.
"""

from __future__ import annotations

import re
from pathlib import PurePath

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _clean(name: str) -> str:
    return _SAFE.sub("_", name).strip("_.") or "input"


def origin_of(file_path: str, given: str) -> str:
    """The origin of `file_path`, found under the `--input` value `given` (the same for a file)."""
    parts = PurePath(file_path).parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "synthetic_tasks" and len(parts) - i >= 5:  # synthetic_tasks/<config>/<level>/<domain>/...
            config, level, domain = parts[i + 1], parts[i + 2], parts[i + 3]
            return f"{_clean(config)}_{_clean(level)}/{_clean(domain)}"
        if parts[i] == "dataset_adapters" and len(parts) - i == 2:  # dataset_adapters/<name>.parquet
            return f"dataset_adapters/{_clean(PurePath(parts[i + 1]).stem)}"
    root = PurePath(given.rstrip("/\\") or given)
    return _clean(root.stem if root.suffix in (".parquet", ".jsonl", ".json", ".arrow") else root.name or given)
