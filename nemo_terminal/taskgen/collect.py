"""`taskgen collect`: Harbor job directories -> Terminal-Corpus records (JSONL) that `prepare` reads.

One record per finished trial: the whole trajectory as `conversations`, `episode` = "episode-N"
with N = assistant turns - 1 (as in Terminal-Corpus), and the verifier's `reward`, which
`prepare`'s opt-in `filters.require_success` uses. Failed and incomplete trajectories are kept:
the paper found that keeping them scores higher. Reasoning the server returned apart from the
answer is joined into the turn by `models.chat.join_reasoning`, the one normalisation that training
and the exported chat template share.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nemo_terminal.errors import UserError
from nemo_terminal.harbor.jobs import Job, Message, Trial, find_jobs, read_job
from nemo_terminal.models.chat import join_reasoning, split_reasoning

log = logging.getLogger(__name__)
SKIP_REASONS = {
    "no_trajectory": "the trial left no agent/trajectory.json (it failed before the agent ran)",
    "unreadable_trajectory": "agent/trajectory.json is not valid JSON (the trial was killed while writing it)",
    "not_raw": "the trajectory holds Harbor's 'Analysis/Plan' summary, not the model's replies: run "
               "Terminus-2 with --ak trajectory_config='{\"raw_content\": true}' (or store_all_messages=true)",
    "no_assistant_turn": "the model never answered",
}


def assistant_text(message: Message) -> str:
    """Reasoning returned apart (`reasoning_content`) or inline (`<think>`), in the canonical form."""
    return join_reasoning(*split_reasoning(message.content, message.reasoning))


def trial_record(job: Job, trial: Trial) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) or (None, skip reason)."""
    try:
        conv = trial.conversation()
    except UserError as err:
        log.warning("skipping %s", err)
        return None, "unreadable_trajectory"
    if conv is None:
        return None, "no_trajectory"
    if not conv.raw:
        return None, "not_raw"
    turns = [{"role": m.role, "content": assistant_text(m) if m.role == "assistant" else m.content}
             for m in conv.messages]
    answers = sum(t["role"] == "assistant" for t in turns)
    if answers == 0:
        return None, "no_assistant_turn"
    record = {
        "conversations": turns, "agent": trial.agent, "model": trial.model, "model_provider": trial.model_provider,
        "date": trial.started_at, "task": trial.task_name, "episode": f"episode-{answers - 1}", "run_id": job.name,
        "trial_name": trial.trial_name,
        "enable_thinking": any(t["role"] == "assistant" and "</think>" in t["content"] for t in turns),
        "reward": trial.reward, "exception": trial.exception_type,
    }
    return record, None


def collect(paths: list[str], out_file: str | Path) -> dict[str, Any]:
    """Write one JSONL record per collectable trial of the jobs under `paths`; return the counts."""
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = [job for p in paths for job in find_jobs(p)]
    skipped = {reason: 0 for reason in SKIP_REASONS}
    records, unfinished, rewards = 0, 0, []
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for job_path in jobs:
            job = read_job(job_path)
            unfinished += len(job.unfinished)
            for trial in tqdm(job.trials, unit="trial", desc=f"collect {job.name}", disable=None):
                record, reason = trial_record(job, trial)
                if reason is not None:
                    skipped[reason] += 1
                    continue
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                records += 1
                if record["reward"] is not None:
                    rewards.append(record["reward"])
    os.replace(tmp, out)
    return {"jobs": len(jobs), "records": records, "skipped": skipped, "unfinished_trials": unfinished,
            "with_reward": len(rewards), "solved": sum(r >= 1.0 for r in rewards),
            "mean_reward": round(sum(rewards) / len(rewards), 4) if rewards else None}
