"""Strict extraction of the one JSON object an LLM was asked for.

Servers without structured output return the object in the shapes models actually produce:
bare, inside a markdown fence, after a sentence of preamble, or followed by prose. Those are
accepted. A reply cut off mid-object (max_tokens reached) is *rejected* as `truncated_json`,
never repaired: a repaired task would be a task nobody wrote. Anything else is `not_json`.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)(?:\n```|\Z)", re.DOTALL)
_THINK = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)
MAX_OBJECT_STARTS = 32  # "{" positions tried before giving up on prose full of braces


class ParseError(ValueError):
    """Why a reply holds no usable object: reason is `not_json` or `truncated_json`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _ends_inside_object(text: str) -> bool:
    """True when text, from its first "{", ends with an open string or unclosed brackets."""
    depth, in_string, escaped = 0, False, False
    for ch in text[text.find("{"):]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return False
    return depth > 0 or in_string


def _first_object(text: str) -> dict[str, Any]:
    decoder = json.JSONDecoder()
    start, tries, last_err = text.find("{"), 0, "no JSON object in the reply"
    while start != -1 and tries < MAX_OBJECT_STARTS:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError as err:
            last_err = f"{err.msg} at offset {err.pos}"
        else:
            if isinstance(obj, dict):
                return obj
            last_err = f"a JSON {type(obj).__name__}, not an object"
        start, tries = text.find("{", start + 1), tries + 1
    raise ParseError("not_json", last_err)


def extract_object(text: str, finish_reason: str | None = None) -> dict[str, Any]:
    """The JSON object in an LLM reply, or ParseError. `finish_reason="length"` is truncation."""
    if finish_reason == "length":
        raise ParseError("truncated_json", "the server stopped at max_tokens (finish_reason=length)")
    body = _THINK.sub("", text, count=1).strip()  # reasoning models may inline their thoughts
    fence = _FENCE.search(body)
    if fence:
        inner = fence.group(1).strip()
        closed = fence.group(0).rstrip().endswith("```")
        if not closed and _ends_inside_object(inner):
            raise ParseError("truncated_json", "the fenced JSON block never closes")
        try:
            obj = json.loads(inner)
        except json.JSONDecodeError as err:
            if _ends_inside_object(inner):
                raise ParseError("truncated_json", f"the fenced JSON ends inside the object ({err.msg})") from None
            raise ParseError("not_json", f"fenced block: {err.msg} at offset {err.pos}") from None
        if not isinstance(obj, dict):
            raise ParseError("not_json", f"the fenced block holds a JSON {type(obj).__name__}, not an object")
        return obj
    if "{" in body and _ends_inside_object(body):
        raise ParseError("truncated_json", "the reply ends inside the JSON object")
    return _first_object(body)
