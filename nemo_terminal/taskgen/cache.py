"""On-disk cache of LLM replies, keyed by a hash of the request, so runs resume and re-runs are free.

The key is the canonical JSON of what decides the reply: base URL, model, messages and sampling
parameters (including the per-attempt seed and the structured-output mode asked for). Never the
API key: it does not change the reply, and nothing here may hold it. Entries are written
atomically (temp file + rename), so a killed run leaves whole entries or none. Only successful
replies are stored; a failed request is asked again next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def request_key(request: dict[str, Any]) -> str:
    """sha256 of the request's canonical JSON."""
    blob = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReplyCache:
    """`DIR/ab/abcdef....json` files holding {"request": ..., "reply": ...}."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))["reply"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError):  # a damaged entry is a miss, and is rewritten
            return None

    def put(self, key: str, request: dict[str, Any], reply: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"request": request, "reply": reply}, sort_keys=True, ensure_ascii=False, indent=1)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data + "\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
