"""`taskgen generate`: seed- or skill-based attempts -> validated Harbor tasks + report.json.

Each attempt is one request (transport errors retried inside the client). Replies are judged in
attempt order, whatever order they arrive in, so near-duplicate detection and the output are the
same for a seed and a cached endpoint. A rejected reply is counted under its reason, not re-asked,
so `--num N` bounds the cost of a run. The task tree is written aside and swapped in at the end;
report.json holds only what is deterministic, run.json what this process did (cache hits, retries).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nemo_terminal.taskgen.cache import ReplyCache
from nemo_terminal.taskgen.dedup import NearDuplicates
from nemo_terminal.taskgen.envs import DEFAULT_IMAGE_PREFIX, image_name
from nemo_terminal.taskgen.filters import TaskFilters
from nemo_terminal.taskgen.harbor_task import TaskSettings, write_task
from nemo_terminal.taskgen.jsonparse import ParseError, extract_object
from nemo_terminal.taskgen.llm import (
    ChatClient,
    LLMSettings,
    Reply,
    RequestFailed,
    ordered_map,
)
from nemo_terminal.taskgen.messages import messages
from nemo_terminal.taskgen.plan import Attempt
from nemo_terminal.taskgen.spec import SpecError, TaskSpec, json_schema, spec_from_json
from nemo_terminal.taskgen.validate import (
    REJECTION_REASONS,
    Limits,
    Rejected,
    check_structure,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateOptions:
    out: Path
    cache_dir: Path
    limits: Limits = Limits()
    decontaminate_file: str | None = None
    near_duplicate_threshold: float = 0.8
    image_prefix: str = DEFAULT_IMAGE_PREFIX
    progress: bool = True


class Judge:
    """Turns replies into accepted specs or rejection reasons, in attempt order."""

    def __init__(self, opts: GenerateOptions, model: str):
        self.opts, self.model = opts, model
        self.filters = TaskFilters(opts.decontaminate_file)
        self.near = NearDuplicates(opts.near_duplicate_threshold)

    def spec(self, attempt: Attempt, reply: Reply) -> TaskSpec:
        try:
            spec = spec_from_json(extract_object(reply.content, reply.finish_reason))
        except ParseError as err:
            raise Rejected(err.reason, err.detail) from None
        except SpecError as err:
            raise Rejected("schema", str(err)) from None
        meta: dict[str, Any] = {"source": f"nemo-terminal taskgen {attempt.mode}", "attempt": attempt.index,
                                "generator_model": self.model}
        if attempt.mode == "skill":  # what was asked is the truth about the task, not the echo
            spec = replace(spec, domain=attempt.domain or spec.domain, skills=attempt.skills)
        elif attempt.domain:
            spec = replace(spec, domain=attempt.domain)
        if attempt.seed is not None and attempt.seed.id is not None:
            meta["seed_id"] = attempt.seed.id
        return replace(spec, metadata=meta)

    def judge(self, attempt: Attempt, reply: Reply) -> TaskSpec:
        spec = self.spec(attempt, reply)
        check_structure(spec, self.opts.limits)
        reason = self.filters.reason(spec)
        if reason is not None:
            raise Rejected(reason, "paper filter (shared with prepare)")
        earlier = self.near.add(attempt.name, spec.instruction)
        if earlier is not None:
            raise Rejected("near_duplicate", f"instruction is a near-duplicate of {earlier}")
        return spec


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def generate(attempts: list[Attempt], settings: LLMSettings, opts: GenerateOptions) -> dict[str, Any]:
    """Run the attempts against the endpoint and write OUT/tasks, report.json, rejected.jsonl, run.json."""
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    client = ChatClient(settings, ReplyCache(opts.cache_dir))
    judge = Judge(opts, settings.model)
    schema = json_schema() if settings.structured != "none" else None
    staging = out / ".tasks.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    rejected = {reason: 0 for reason in REJECTION_REASONS}
    rejections: list[dict[str, Any]] = []
    accepted: list[str] = []
    tokens = {"prompt": 0, "completion": 0}

    def ask(attempt: Attempt) -> Reply:
        return client.complete(messages(attempt), seed=attempt.request_seed, schema=schema)

    bar = tqdm(total=len(attempts), unit="task", desc="generate", disable=None if opts.progress else True)
    try:
        for attempt, result in ordered_map(ask, attempts, settings.concurrency):
            try:
                if isinstance(result, RequestFailed):
                    raise Rejected("request_failed", str(result))
                if isinstance(result, BaseException):
                    raise result
                tokens["prompt"] += result.prompt_tokens
                tokens["completion"] += result.completion_tokens
                spec = judge.judge(attempt, result)
            except Rejected as rej:
                rejected[rej.reason] += 1
                rejections.append({"attempt": attempt.index, "name": attempt.name, "reason": rej.reason,
                                   "detail": rej.detail[:500]})
            else:
                write_task(spec, staging / attempt.name, TaskSettings(image=image_name(spec.domain, opts.image_prefix)))
                accepted.append(attempt.name)
            bar.update(1)
            bar.set_postfix(accepted=len(accepted), rejected=len(rejections), refresh=False)
    finally:
        bar.close()
    final = out / "tasks"
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    report = {"mode": attempts[0].mode if attempts else None, "model": settings.model, "attempts": len(attempts),
              "accepted": len(accepted), "rejected": rejected, "tokens": tokens, "tasks": accepted,
              "reasons": REJECTION_REASONS}
    _write_json(out / "report.json", report)
    with open(out / "rejected.jsonl", "w", encoding="utf-8") as f:
        for row in rejections:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    _write_json(out / "run.json", client.counters.to_json())
    log.info("generate: %d/%d accepted, %d requests sent, %d cache hits -> %s", len(accepted), len(attempts),
             client.counters.requests_sent, client.counters.cache_hits, final)
    return report
