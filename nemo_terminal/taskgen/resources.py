"""Package data of taskgen: prompt templates, the skill taxonomy, Dockerfiles, task templates.

Templates use `{{name}}` placeholders rather than `str.format`, because the prompts show JSON
(braces) and LLM text may contain braces too. A placeholder left unfilled is a bug, so it raises.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def read_text(*parts: str) -> str:
    """A package data file of nemo_terminal.taskgen, e.g. read_text("prompts", "seed.md")."""
    node = resources.files("nemo_terminal.taskgen")
    for part in parts:
        node = node / part
    return node.read_text(encoding="utf-8")


def render(template: str, **values: str) -> str:
    """Fill `{{name}}` placeholders in one pass (values are never re-scanned)."""

    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"template placeholder {{{{{name}}}}} has no value")
        return values[name]

    return _PLACEHOLDER.sub(sub, template)


def prompt(name: str, **values: str) -> str:
    """prompts/<name>.md rendered."""
    return render(read_text("prompts", f"{name}.md"), **values)


@lru_cache(maxsize=1)
def taxonomy() -> dict[str, Any]:
    """skills.json: skill groups and the 9 domains (with their preferred groups)."""
    return json.loads(read_text("skills.json"))


def domains() -> list[str]:
    """The 9 domain slugs, in the taxonomy's order."""
    return list(taxonomy()["domains"])
