"""Record validation: the shape every trajectory must have before it is rendered.

A record is a list of `{role, content}` turns. It must alternate user/assistant starting with
user, hold at least one assistant turn, have no empty content, be valid UTF-8, and contain no
chat-control tokens (a literal `<|im_end|>` in content would be tokenized as the control token
and break the turn structure the loss mask relies on). Failures return a named reason.
"""

from __future__ import annotations

from typing import Any, Optional

from nemo_terminal.models.chat import Turns

# reason -> what it means (for docs and the report's legend)
VALIDATION_REASONS = {
    "malformed": "not a list of {role, content} objects with string values (or unreadable row)",
    "invalid_utf8": "content is not valid UTF-8 (bytes or lone surrogates)",
    "bad_role": "a role other than user/assistant",
    "bad_turn_order": "roles do not alternate starting with user",
    "no_assistant_turn": "no assistant turn to train on",
    "empty_content": "a turn's content is empty or whitespace only",
    "control_token_in_content": "content contains <|im_start|>, <|im_end|> or <|endoftext|>",
}
CONTROL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


def validate_record(conversations: Any) -> tuple[Optional[Turns], Optional[str]]:
    """(turns, None) for a valid record, else (None, reason) with reason in VALIDATION_REASONS."""
    if not isinstance(conversations, (list, tuple)) or not conversations:
        return None, "malformed"
    turns: Turns = []
    for turn in conversations:
        if not isinstance(turn, dict):
            return None, "malformed"
        role, content = turn.get("role"), turn.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            return None, "malformed"
        turns.append((role, content))
    for i, (role, content) in enumerate(turns):
        if role not in ("user", "assistant"):
            return None, "bad_role"
        if role != ("user" if i % 2 == 0 else "assistant"):
            return None, "bad_turn_order"
    if len(turns) < 2:
        return None, "no_assistant_turn"
    for _, content in turns:
        if not content.strip():
            return None, "empty_content"
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:
            return None, "invalid_utf8"
        if "<|" in content and any(tok in content for tok in CONTROL_TOKENS):
            return None, "control_token_in_content"
    return turns, None
