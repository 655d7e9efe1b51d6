"""Record validation: the shape every trajectory must have before it is rendered.

A record is a list of `{role, content}` turns (or ShareGPT's `{from, value}` with `human`/`gpt`
roles, mapped to user/assistant). An optional leading `system` turn is kept (rendered, never
trained); after it, turns must alternate user/assistant starting with user, hold at least one
assistant turn, have no empty content, be valid UTF-8, and contain no
chat-control tokens (a literal `<|im_end|>` in content would be tokenized as the control token
and break the turn structure the loss mask relies on). Failures return a named reason.
"""

from __future__ import annotations

from typing import Any

from nemo_terminal.models.chat import Turns

# reason -> what it means (for docs and the report's legend)
VALIDATION_REASONS = {
    "malformed": "not a list of {role, content} objects with string values (or unreadable row)",
    "invalid_utf8": "content is not valid UTF-8 (bytes or lone surrogates)",
    "bad_role": "a role other than system/user/assistant (ShareGPT: system/human/gpt)",
    "bad_turn_order": "roles do not alternate starting with user (after an optional leading system turn)",
    "no_assistant_turn": "no assistant turn to train on",
    "empty_content": "a turn's content is empty or whitespace only",
    "control_token_in_content": "content contains <|im_start|>, <|im_end|> or <|endoftext|>",
}
CONTROL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
# ShareGPT's role names (`from`) -> ours; ours map to themselves.
ROLE_NAMES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}


def _turn(turn: Any) -> tuple[Any, Any] | None:
    """(role, content) of an OpenAI-style or ShareGPT-style turn; None if it is neither."""
    if not isinstance(turn, dict):
        return None
    if "role" in turn or "content" in turn:
        return turn.get("role"), turn.get("content")
    if "from" in turn or "value" in turn:
        role = turn.get("from")
        return ROLE_NAMES.get(role, role) if isinstance(role, str) else role, turn.get("value")
    return None


def validate_record(conversations: Any) -> tuple[Turns | None, str | None]:
    """(turns, None) for a valid record, else (None, reason) with reason in VALIDATION_REASONS."""
    if not isinstance(conversations, (list, tuple)) or not conversations:
        return None, "malformed"
    turns: Turns = []
    for turn in conversations:
        pair = _turn(turn)
        if pair is None or not isinstance(pair[0], str) or not isinstance(pair[1], str):
            return None, "malformed"
        turns.append(pair)
    first = 1 if turns[0][0] == "system" else 0
    for i, (role, _) in enumerate(turns[first:]):
        if role not in ("user", "assistant"):
            return None, "bad_turn_order" if role == "system" else "bad_role"
        if role != ("user" if i % 2 == 0 else "assistant"):
            return None, "bad_turn_order"
    if len(turns) - first < 2:
        return None, "no_assistant_turn"
    for role, content in turns:
        # An empty system prompt renders as Qwen3 does. isspace() is `not strip()` without the copy.
        if (not content or content.isspace()) and role != "system":
            return None, "empty_content"
        if not content.isascii():  # ASCII (most text) is valid UTF-8: skip the copy
            try:
                content.encode("utf-8")
            except UnicodeEncodeError:
                return None, "invalid_utf8"
        if "<|" in content and any(tok in content for tok in CONTROL_TOKENS):
            return None, "control_token_in_content"
    return turns, None
