"""Chat completions from any OpenAI-compatible endpoint (vLLM, SGLang, NIM, hosted APIs).

Uses the official `openai` client with its own retries off, so that retrying is ours and visible:
transport errors, 429 and 5xx are retried with exponential backoff (honouring Retry-After);
anything else is final. Structured output is asked for as a JSON schema in `response_format`;
in `auto` mode a server that rejects it (400/422) is asked again without it, once for the run.
Every reply goes through the on-disk cache. The API key is read from the environment when the
client is built and handed to `openai` only; it is never logged, cached or reported.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai

from nemo_terminal.errors import UserError
from nemo_terminal.taskgen.cache import ReplyCache, request_key

log = logging.getLogger(__name__)
STRUCTURED_MODES = ("auto", "json_schema", "json_object", "none")
NO_KEY = "EMPTY"  # what vLLM/SGLang accept when they were started without --api-key

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class LLMSettings:
    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 8192
    concurrency: int = 8
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    timeout_s: float = 600.0
    structured: str = "auto"

    def __post_init__(self) -> None:
        if self.structured not in STRUCTURED_MODES:
            raise UserError(f"--structured must be one of {STRUCTURED_MODES}, got {self.structured!r}")
        if self.concurrency < 1 or self.max_retries < 0 or self.max_tokens < 1:
            raise UserError("--concurrency and --max-tokens must be >= 1, --max-retries >= 0")


@dataclass
class Reply:
    content: str
    finish_reason: str | None
    reasoning: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False

    def to_cache(self) -> dict[str, Any]:
        return {"content": self.content, "finish_reason": self.finish_reason, "reasoning": self.reasoning,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


class RequestFailed(Exception):
    """The endpoint failed after all retries (counted as `request_failed`, not cached)."""


@dataclass
class Counters:
    """What this process did (not deterministic across resumes, so kept out of report.json)."""

    requests_sent: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0  # spent by this process (cached replies cost nothing)
    completion_tokens: int = 0
    retries: int = 0
    failed: int = 0
    structured_fallback: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **kw: int) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "lock"}


def _retry_after(err: Exception) -> float | None:
    response = getattr(err, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class ChatClient:
    """One endpoint + model, with retries, structured output, token counts and the reply cache."""

    def __init__(self, settings: LLMSettings, cache: ReplyCache | None = None):
        self.settings, self.cache = settings, cache
        self.counters = Counters()
        self._structured = settings.structured
        self._openai = openai
        # The key is passed straight to the client and kept nowhere else.
        self._client = openai.OpenAI(base_url=settings.base_url, api_key=os.environ.get(settings.api_key_env) or NO_KEY,
                                     max_retries=0, timeout=settings.timeout_s)

    def _request(self, messages: list[dict[str, str]], seed: int | None, schema: dict | None) -> dict[str, Any]:
        """What decides the reply (the cache key's content): never the key, never the URL."""
        s = self.settings
        return {"model": s.model, "messages": messages, "temperature": s.temperature, "top_p": s.top_p,
                "max_tokens": s.max_tokens, "seed": seed, "structured": s.structured if schema else "none",
                "schema": schema if s.structured != "none" else None}

    def _response_format(self, schema: dict | None) -> dict[str, Any] | None:
        mode = self._structured if schema else "none"
        if mode in ("auto", "json_schema"):
            return {"type": "json_schema", "json_schema": {"name": "task_spec", "schema": schema}}
        if mode == "json_object":
            return {"type": "json_object"}
        return None

    def _send(self, messages: list[dict[str, str]], seed: int | None, schema: dict | None) -> Reply:
        s, oa = self.settings, self._openai
        attempt = 0
        while True:
            fmt = self._response_format(schema)
            kwargs: dict[str, Any] = dict(model=s.model, messages=messages, temperature=s.temperature,
                                          top_p=s.top_p, max_tokens=s.max_tokens)
            if seed is not None:
                kwargs["seed"] = seed
            if fmt is not None:
                kwargs["response_format"] = fmt
            self.counters.add(requests_sent=1)
            try:
                completion = self._client.chat.completions.create(**kwargs)
            except (oa.BadRequestError, oa.UnprocessableEntityError) as err:
                if fmt is not None and s.structured == "auto":  # also for requests in flight when it flipped
                    if not self.counters.structured_fallback:
                        log.warning("%s rejected response_format (%s); asking without it from now on",
                                    s.base_url, err.status_code)
                    self._structured = "none"
                    self.counters.structured_fallback = True
                    continue
                raise RequestFailed(f"HTTP {err.status_code}: {err.message}") from None
            except (oa.AuthenticationError, oa.PermissionDeniedError) as err:
                raise UserError(f"{s.base_url} refused the API key (HTTP {err.status_code}); "
                                f"set it in the environment variable {s.api_key_env}") from None
            except oa.NotFoundError:
                raise UserError(f"{s.base_url}: model {s.model!r} or the chat completions route was not "
                                "found (HTTP 404); check --llm-url (…/v1) and --model") from None
            except (oa.APIConnectionError, oa.RateLimitError, oa.InternalServerError) as err:
                if attempt >= s.max_retries:
                    raise RequestFailed(f"{type(err).__name__} after {attempt + 1} tries") from None
                wait = _retry_after(err)
                wait = min(s.max_backoff_s, wait if wait is not None else s.backoff_s * 2 ** attempt)
                log.info("%s: %s; retry %d/%d in %.1fs", s.base_url, type(err).__name__, attempt + 1,
                         s.max_retries, wait)
                self.counters.add(retries=1)
                attempt += 1
                time.sleep(wait)
                continue
            except oa.APIStatusError as err:
                raise RequestFailed(f"HTTP {err.status_code}: {err.message}") from None
            return self._reply(completion)

    @staticmethod
    def _reply(completion: Any) -> Reply:
        choice = completion.choices[0]
        message = choice.message
        extra = getattr(message, "model_extra", None) or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning")
        usage = completion.usage
        return Reply(content=message.content or "", finish_reason=choice.finish_reason, reasoning=reasoning,
                     prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                     completion_tokens=getattr(usage, "completion_tokens", 0) or 0)

    def complete(self, messages: list[dict[str, str]], seed: int | None = None,
                 schema: dict | None = None) -> Reply:
        """One reply, from the cache when this exact request was answered before."""
        request = self._request(messages, seed, schema)
        key = request_key(request)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.counters.add(cache_hits=1)
                return Reply(**hit, cached=True)
        try:
            reply = self._send(messages, seed, schema)
        except RequestFailed:
            self.counters.add(failed=1)
            raise
        self.counters.add(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
        if self.cache is not None:
            self.cache.put(key, request, reply.to_cache())
        return reply


def ordered_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[tuple[T, R | BaseException]]:
    """(item, fn(item) or the exception it raised), in item order, with at most `workers` calls
    running and a bounded window of finished-but-unyielded results."""
    window = max(1, workers) * 4
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="llm")
    futures: dict[int, Future] = {}
    try:
        next_submit = 0
        for i in range(len(items)):
            while next_submit < len(items) and next_submit < i + window:
                futures[next_submit] = pool.submit(fn, items[next_submit])
                next_submit += 1
            future = futures.pop(i)
            try:
                result: R | BaseException = future.result()
            except UserError:
                raise
            except Exception as err:  # noqa: BLE001 - handed to the caller, who counts it
                result = err
            yield items[i], result
    finally:  # on error or an abandoned generator: drop what has not started, wait for the rest
        for f in futures.values():
            f.cancel()
        pool.shutdown(wait=True)
