"""A local OpenAI-compatible endpoint (`POST /v1/chat/completions` on 127.0.0.1) that replays
hand-written replies, for testing `taskgen generate` without a model.

The reply to a request is chosen by the `[case:NAME]` marker in its last user message and read
from `replies/NAME.txt` (the exact `message.content` a model returned). Misbehaviour is switched
on per server: refuse `response_format` (400, like servers without structured output), answer
`server_error` cases with 500, rate-limit a case once with 429, or run a hook before answering
(used to kill a client after k requests).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nemo_terminal.testing import LocalChatServer

REPLIES = Path(__file__).parent / "replies"
_CASE = re.compile(r"\[case:(\w+)\]")


class ReplayServer(LocalChatServer):
    model = "replay"

    def __init__(self, replies: Path = REPLIES, reject_response_format: bool = False,
                 rate_limit_once: tuple[str, ...] = ("good_ratelimited",), reasoning: str | None = None,
                 before_reply: Callable[[int], None] | None = None):
        self.replies, self.reject_response_format = replies, reject_response_format
        self.rate_limit_once, self.reasoning, self.before_reply = set(rate_limit_once), reasoning, before_reply
        self._limited: set[str] = set()
        super().__init__()

    def record(self, headers: dict[str, str], body: dict) -> dict[str, Any]:
        return {"headers": {k.lower(): v for k, v in headers.items()}, "body": body}

    def answer(self, path: str, body: dict, count: int) -> tuple[int, dict, dict[str, str]]:
        if self.before_reply is not None:
            self.before_reply(count)
        return self.respond(path, body)

    @staticmethod
    def _error(status: int, message: str) -> tuple[int, dict, dict]:
        return status, {"error": {"message": message, "type": "invalid_request_error", "code": status}}, {}

    def respond(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if path != "/v1/chat/completions":
            return self._error(404, f"no route {path}")
        if self.reject_response_format and "response_format" in body:
            return self._error(400, "response_format is not supported by this server")
        user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        match = _CASE.search(user)
        if match is None:
            return self._error(400, "no [case:NAME] marker in the prompt")
        case = match.group(1)
        if case == "server_error":
            return self._error(500, "upstream model worker crashed")
        with self.lock:
            if case in self.rate_limit_once and case not in self._limited:
                self._limited.add(case)
                status, payload, _ = self._error(429, "rate limit reached")
                return status, payload, {"Retry-After": "0"}
        content = (self.replies / f"{case}.txt").read_text(encoding="utf-8")
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
        return 200, {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": 1700000000,
            "model": body.get("model", "replay"),
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "length" if "length" in case else "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content.split()),
                      "total_tokens": prompt_tokens + len(content.split())},
        }, {}
