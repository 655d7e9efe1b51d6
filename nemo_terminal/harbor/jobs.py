"""Read Harbor job directories (Harbor 0.25 on-disk format), without importing Harbor.

    JOB/config.json, result.json                  the job (JobConfig, JobResult)
    JOB/<trial>/config.json                       TrialConfig: agent name, model, agent kwargs
    JOB/<trial>/result.json                       TrialResult: task, rewards, tokens, exception
    JOB/<trial>/agent/trajectory.json             the agent's ATIF trajectory (Terminus-2 writes it
                                                  after every episode, so it survives a crash)

Harbor runs in its own virtual environment (it needs Python >= 3.12), so this module reads the JSON
itself, tolerating fields it does not know. Shared by `taskgen collect` and the evaluation report.

Terminus-2 stores the model's raw reply in a trajectory step only with
`--ak trajectory_config='{"raw_content": true}'`; by default a step holds "Analysis: ...\\nPlan: ..."
and the commands as tool calls, which is not what the model said. `Trial.conversation()` says which
it found; `--ak store_all_messages=true` (the chat as sent, in result.json) is used when present.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_terminal.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    role: str  # "user" | "assistant"
    content: str
    reasoning: str | None = None  # the server's reasoning_content, kept apart


@dataclass(frozen=True)
class Conversation:
    messages: list[Message]
    source: str  # "trajectory" | "all_messages"
    raw: bool  # the assistant turns are the model's replies verbatim


@dataclass
class Trial:
    path: Path
    trial_name: str
    task_name: str
    agent: str | None = None
    model: str | None = None
    model_provider: str | None = None
    rewards: dict[str, float] = field(default_factory=dict)
    exception_type: str | None = None
    exception_message: str | None = None
    n_input_tokens: int | None = None
    n_output_tokens: int | None = None
    n_cache_tokens: int | None = None
    cost_usd: float | None = None
    n_turns: int | None = None  # Terminus-2's n_episodes
    started_at: str | None = None
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    _result: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def reward(self) -> float | None:
        """The `reward` key (reward.txt), else the only reward of reward.json, else None."""
        if "reward" in self.rewards:
            return self.rewards["reward"]
        return next(iter(self.rewards.values())) if len(self.rewards) == 1 else None

    @property
    def trajectory_path(self) -> Path:
        return self.path / "agent" / "trajectory.json"

    def conversation(self) -> Conversation | None:
        """The chat as user/assistant turns, or None when the trial left no trajectory."""
        steps = _read_json(self.trajectory_path).get("steps") if self.trajectory_path.is_file() else None
        all_messages = ((self._result.get("agent_result") or {}).get("metadata") or {}).get("all_messages")
        raw_flag = bool((self.agent_kwargs.get("trajectory_config") or {}).get("raw_content"))
        if steps:
            messages = _messages_from_steps(steps)
            raw = raw_flag or not any(s.get("tool_calls") for s in steps if s.get("source") == "agent")
            if raw or not all_messages:
                return Conversation(messages, "trajectory", raw)
        if all_messages:
            reasoning = [m.reasoning for m in _messages_from_steps(steps or []) if m.role == "assistant"]
            return Conversation(_messages_from_chat(all_messages, reasoning), "all_messages", True)
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: unreadable Harbor JSON ({err})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object")
    return obj


def _text(value: Any) -> str:
    """A message that is a string or a list of ATIF content parts ({"type": "text", "text": ...})."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p.get("text", "") for p in value if isinstance(p, dict))
    return ""


def _messages_from_steps(steps: list[dict[str, Any]]) -> list[Message]:
    """ATIF steps -> alternating turns. An agent step's observation is the next user turn only if
    another agent step follows (the last observation was never sent to the model)."""
    messages: list[Message] = []
    pending: str | None = None
    for step in steps:
        if step.get("is_copied_context") or step.get("source") == "system":
            continue
        if step.get("source") == "user":
            pending = None
            messages.append(Message("user", _text(step.get("message"))))
        elif step.get("source") == "agent":
            if pending is not None:
                messages.append(Message("user", pending))
            messages.append(Message("assistant", _text(step.get("message")), step.get("reasoning_content")))
            results = (step.get("observation") or {}).get("results") or []
            texts = [_text(r.get("content")) for r in results if isinstance(r, dict)]
            pending = "\n".join(texts) if texts else None
    return messages


def _messages_from_chat(chat: list[dict[str, Any]], reasoning: list[str | None]) -> list[Message]:
    out, k = [], 0
    for m in chat:
        if m.get("role") not in ("user", "assistant"):
            continue
        r = m.get("reasoning_content")
        if m["role"] == "assistant":
            r = r or (reasoning[k] if k < len(reasoning) else None)
            k += 1
        out.append(Message(m["role"], _text(m.get("content")), r))
    return out


def read_trial(path: Path) -> Trial:
    """One finished trial (its result.json must exist)."""
    result = _read_json(path / "result.json")
    config = _read_json(path / "config.json") if (path / "config.json").is_file() else result.get("config") or {}
    agent_cfg = config.get("agent") or {}
    info = result.get("agent_info") or {}
    model_info = info.get("model_info") or {}
    agent_result = result.get("agent_result") or {}
    exc = result.get("exception_info") or {}
    rewards = (result.get("verifier_result") or {}).get("rewards") or {}
    return Trial(
        path=path, trial_name=result.get("trial_name") or path.name, task_name=result.get("task_name") or "",
        agent=info.get("name") or agent_cfg.get("name"),
        model=model_info.get("name") or agent_cfg.get("model_name"), model_provider=model_info.get("provider"),
        rewards={k: float(v) for k, v in rewards.items()},
        exception_type=exc.get("exception_type"), exception_message=exc.get("exception_message"),
        n_input_tokens=agent_result.get("n_input_tokens"), n_output_tokens=agent_result.get("n_output_tokens"),
        n_cache_tokens=agent_result.get("n_cache_tokens"), cost_usd=agent_result.get("cost_usd"),
        n_turns=(agent_result.get("metadata") or {}).get("n_episodes"), started_at=result.get("started_at"),
        agent_kwargs=agent_cfg.get("kwargs") or {}, _result=result)


@dataclass
class Job:
    path: Path
    trials: list[Trial]
    unfinished: list[Path]  # trial directories without a readable result.json (running, or killed)

    @property
    def name(self) -> str:
        return self.path.name


def _is_trial_dir(d: Path) -> bool:
    """Harbor creates agent/, verifier/ and trial.log when a trial starts; a job directory has none
    of them (it has job.log). Copies may drop empty directories, hence the three signs."""
    return d.is_dir() and ((d / "trial.log").is_file() or (d / "agent").is_dir() or (d / "verifier").is_dir())


def _is_job_dir(d: Path) -> bool:
    return d.is_dir() and any(_is_trial_dir(c) for c in d.iterdir())


def find_jobs(path: str | Path) -> list[Path]:
    """A job directory itself, or the job directories directly inside `path` (Harbor's jobs/)."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: no such directory")
    if _is_job_dir(p):
        return [p]
    jobs = sorted(c for c in p.iterdir() if _is_job_dir(c))
    if not jobs:
        raise UserError(f"{p}: not a Harbor job directory, nor a directory of them "
                        "(no trial directory with trial.log, agent/ or verifier/)")
    return jobs


def read_job(path: str | Path) -> Job:
    """The finished trials of one job, sorted by trial name. A result.json that cannot be read (a
    trial killed while Harbor wrote it) counts as unfinished, with a warning, as Harbor treats it."""
    p = Path(path)
    trials, unfinished = [], []
    for d in sorted(c for c in p.iterdir() if _is_trial_dir(c)):
        if not (d / "result.json").is_file():
            unfinished.append(d)
            continue
        try:
            trials.append(read_trial(d))
        except UserError as err:
            log.warning("skipping trial: %s", err)
            unfinished.append(d)
    return Job(p, trials, unfinished)
