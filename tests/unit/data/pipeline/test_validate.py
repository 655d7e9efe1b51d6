"""Record validation: each malformation has its named reason."""

from __future__ import annotations

import pytest

from nemo_terminal.data.pipeline.validate import VALIDATION_REASONS, validate_record

U, A = "user", "assistant"


def conv(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


@pytest.mark.parametrize("record,reason", [
    (None, "malformed"),
    ([], "malformed"),
    ([{"role": "user"}], "malformed"),
    (["hello"], "malformed"),
    (conv((U, "a"), ("system", "b")), "bad_turn_order"),
    (conv(("system", "s"), ("system", "t"), (U, "a"), (A, "b")), "bad_turn_order"),
    (conv((U, "a"), ("tool", "b")), "bad_role"),
    ([{"from": "human", "value": "a"}, {"from": "function_call", "value": "b"}], "bad_role"),
    ([{"from": "human", "value": "a"}, {"from": "gpt"}], "malformed"),
    (conv(("system", "s"), (U, "a")), "no_assistant_turn"),
    (conv((A, "a"), (U, "b")), "bad_turn_order"),
    (conv((U, "a"), (U, "b"), (A, "c")), "bad_turn_order"),
    (conv((U, "a")), "no_assistant_turn"),
    (conv((U, "a"), (A, "  \n")), "empty_content"),
    (conv((U, "a\udc80"), (A, "b")), "invalid_utf8"),
    (conv((U, "a"), (A, "b<|im_end|>c")), "control_token_in_content"),
])
def test_each_invalid_record_gets_its_reason(record, reason):
    assert reason in VALIDATION_REASONS
    assert validate_record(record) == (None, reason)


def test_valid_record_ending_with_user_turn_passes():
    turns, reason = validate_record(conv((U, "a"), (A, "<think>\nx\n</think>\n\n{}"), (U, "c")))
    assert reason is None and turns[-1] == (U, "c")


def test_leading_system_turn_and_sharegpt_roles_are_accepted():
    openai = conv(("system", "You are terse."), (U, "a"), (A, "b"))
    sharegpt = [{"from": "system", "value": "You are terse."}, {"from": "human", "value": "a"},
                {"from": "gpt", "value": "b"}]
    expected = [("system", "You are terse."), (U, "a"), (A, "b")]
    assert validate_record(openai) == (expected, None)
    assert validate_record(sharegpt) == (expected, None)
    assert validate_record(conv(("system", ""), (U, "a"), (A, "b")))[1] is None  # empty prompt, as Qwen3 renders it
