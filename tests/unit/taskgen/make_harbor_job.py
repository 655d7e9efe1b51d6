"""Write a Harbor 0.25 job directory through Harbor's own pydantic models (the collect fixture).

Run it with the Python of a Harbor virtual environment (Harbor needs Python >= 3.12):

    /path/to/harbor-venv/bin/python tests/unit/taskgen/make_harbor_job.py tests/unit/taskgen/data/harbor_job

Containers cannot run Terminus-2 on the machines this project is developed on (FACTS.md §8), so the
trials are built with the models Harbor itself writes (TrialResult, TrialConfig, ATIF Trajectory,
JobConfig, JobResult) and Terminus-2's real prompt template. Everything is fixed (ids, times), so
the output is byte-identical on every run; `test_taskgen_harbor.py` re-validates it with Harbor.

Trials:
  t1-solved       raw_content trajectory, reasoning_content on every turn, completion confirmed, reward 1
  t2-parse-error  raw_content trajectory with a parse-error turn, agent timeout, reward 0
  t3-all-messages default (Analysis/Plan) trajectory + store_all_messages: the chat from result.json
  t4-structured   default trajectory only: not the model's replies (collect skips it)
  t5-no-agent     environment build failed before the agent ran: no trajectory
  t6-running      started, no result.json yet
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID

import harbor
from harbor.models.agent.context import AgentContext
from harbor.models.job.config import JobConfig
from harbor.models.job.result import JobResult, JobStats
from harbor.models.task.id import LocalTaskId
from harbor.models.trajectories import (
    Agent,
    FinalMetrics,
    Observation,
    ObservationResult,
    Step,
    ToolCall,
    Trajectory,
)
from harbor.models.trial.config import AgentConfig, TaskConfig, TrialConfig
from harbor.models.trial.result import (
    AgentInfo,
    ExceptionInfo,
    ModelInfo,
    TimingInfo,
    TrialResult,
)
from harbor.models.verifier.result import VerifierResult
from harbor.utils.trajectory_utils import format_trajectory_json

T0 = datetime(2026, 1, 15, 9, 0, 0, tzinfo=timezone.utc)
MODEL = "hosted_vllm/deepseek-v3.2"
TEMPLATE = (Path(harbor.__file__).parent / "agents/terminus_2/templates/terminus-json-plain.txt").read_text()
SCREEN = "Current Terminal Screen:\nroot@4f1c2a9e7b3d:/app# "


def ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def reply(analysis: str, plan: str, commands: list[tuple[str, float]], complete: bool) -> str:
    return json.dumps({"analysis": analysis, "plan": plan,
                       "commands": [{"keystrokes": k, "duration": d} for k, d in commands],
                       "task_complete": complete}, indent=2)


def confirm(screen: str) -> str:
    return (f"Current terminal state:\n{screen}\n\nAre you sure you want to mark the task as complete? This will "
            "trigger your solution to be graded and you won't be able to make any further corrections. If so, "
            'include "task_complete": true in your JSON response again.')


INSTRUCTION = ("Count the lines of /app/data/events.log that contain ERROR and write the number to "
               "/app/error_count.txt.")
PROMPT = TEMPLATE.format(instruction=INSTRUCTION, terminal_state=SCREEN)

# (reasoning, reply, observation sent back) per agent turn of t1
T1_TURNS = [
    ("The log is in /app/data. I should look at it before counting.",
     reply("Fresh shell in /app.", "Inspect the log file.", [("head -n 5 data/events.log\n", 0.1)], False),
     "New Terminal Output:\n\nroot@4f1c2a9e7b3d:/app# head -n 5 data/events.log\n2026-01-14 INFO boot\n"
     "2026-01-14 ERROR disk\n2026-01-14 INFO ok\n2026-01-14 ERROR net\n2026-01-14 WARN slow\nroot@4f1c2a9e7b3d:/app# "),
    ("grep -c counts matching lines, which is what the task asks for.",
     reply("Lines carry a level field.", "Count ERROR lines with grep -c and write the number.",
           [("grep -c ERROR data/events.log > error_count.txt\n", 0.1), ("cat error_count.txt\n", 0.1)], True),
     confirm("New Terminal Output:\n\nroot@4f1c2a9e7b3d:/app# grep -c ERROR data/events.log > error_count.txt\n"
             "root@4f1c2a9e7b3d:/app# cat error_count.txt\n2\nroot@4f1c2a9e7b3d:/app# ")),
    ("The file holds 2, matching the two ERROR lines. Confirm.",
     reply("error_count.txt contains 2.", "Confirm completion.", [], True),
     "New Terminal Output:\n\nroot@4f1c2a9e7b3d:/app# "),
]
PARSE_ERROR = ("Previous response had parsing errors:\nERROR: No valid JSON found in response\n\n"
               "Please fix these issues and provide a proper JSON response.")
T2_TURNS = [
    (None, "I will count the errors now: grep -c ERROR data/events.log", PARSE_ERROR),
    (None, reply("The previous reply was not JSON.", "Count with awk.",
                 [("awk '/ERROR/{n++} END{print n}' data/events.log\n", 1.0)], False),
     "New Terminal Output:\n\nroot@4f1c2a9e7b3d:/app# awk '/ERROR/{n++} END{print n}' data/events.log\n2\n"
     "root@4f1c2a9e7b3d:/app# "),
]


def raw_steps(turns: list[tuple]) -> list[Step]:
    steps = [Step(step_id=1, timestamp=ts(0), source="user", message=PROMPT)]
    for i, (reasoning, text, obs) in enumerate(turns):
        steps.append(Step(step_id=i + 2, timestamp=ts(10 * (i + 1)), source="agent", model_name=MODEL, message=text,
                          reasoning_content=reasoning,
                          observation=Observation(results=[ObservationResult(content=obs)])))
    return steps


def structured_steps() -> list[Step]:
    """What Terminus-2 writes without raw_content: Analysis/Plan text and the commands as tool calls."""
    steps = [Step(step_id=1, timestamp=ts(0), source="user", message=PROMPT)]
    for i, (reasoning, text, obs) in enumerate(T1_TURNS):
        r = json.loads(text)
        calls = [ToolCall(tool_call_id=f"call_{i}_{j + 1}", function_name="bash_command",
                          arguments={"keystrokes": c["keystrokes"], "duration": c["duration"]})
                 for j, c in enumerate(r["commands"])]
        if r["task_complete"]:
            calls.append(ToolCall(tool_call_id=f"call_{i}_task_complete", function_name="mark_task_complete",
                                  arguments={}))
        steps.append(Step(step_id=i + 2, timestamp=ts(10 * (i + 1)), source="agent", model_name=MODEL,
                          message=f"Analysis: {r['analysis']}\nPlan: {r['plan']}", reasoning_content=reasoning,
                          tool_calls=calls or None, observation=Observation(results=[ObservationResult(content=obs)])))
    return steps


def chat(turns: list[tuple]) -> list[dict]:
    messages, prompt = [], PROMPT
    for _, text, obs in turns:
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}]
        prompt = obs
    return messages


def write_json(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")


def trial(job_dir: Path, name: str, n: int, kwargs: dict, steps: list[Step] | None, reward: float | None,
          exception: ExceptionInfo | None = None, metadata: dict | None = None, finished: bool = True) -> TrialResult:
    tdir = job_dir / name
    for sub in ("agent", "verifier", "artifacts"):
        (tdir / sub).mkdir(parents=True, exist_ok=True)
    config = TrialConfig(task=TaskConfig(path=Path("tasks") / "count-errors"), trial_name=name,
                         trials_dir=Path("jobs") / job_dir.name,
                         agent=AgentConfig(name="terminus-2", model_name=MODEL, kwargs=kwargs),
                         job_id=UUID(int=1))
    write_json(tdir / "config.json", config.model_dump_json(indent=4))
    (tdir / "trial.log").write_text(f"trial {name}\n")
    if steps is not None:
        traj = Trajectory(session_id=f"session-{n}", agent=Agent(name="terminus-2", version="2.0.0", model_name=MODEL),
                          steps=steps, final_metrics=FinalMetrics(total_prompt_tokens=1000 * n,
                                                                  total_completion_tokens=100 * n))
        write_json(tdir / "agent" / "trajectory.json", format_trajectory_json(traj.to_json_dict()))
    if reward is not None:
        (tdir / "verifier" / "reward.txt").write_text(f"{reward:g}\n")
    if not finished:
        return None
    agent_result = None
    if steps is not None:
        agent_result = AgentContext(
            n_input_tokens=1000 * n, n_output_tokens=100 * n, n_cache_tokens=0,
            metadata={"n_episodes": sum(s.source == "agent" for s in steps), **(metadata or {})},
        )
    result = TrialResult(
        id=UUID(int=100 + n), task_name="count-errors", trial_name=name, trial_uri=f"file://{name}",
        task_id=LocalTaskId(path=Path("tasks") / "count-errors"), task_checksum="0" * 64, config=config,
        agent_info=AgentInfo(name="terminus-2", version="2.0.0",
                             model_info=ModelInfo(name="deepseek-v3.2", provider="hosted_vllm")),
        agent_result=agent_result,
        verifier_result=VerifierResult(rewards={"reward": reward}) if reward is not None else None,
        exception_info=exception, started_at=T0 + timedelta(minutes=n),
        finished_at=T0 + timedelta(minutes=n, seconds=50),
        agent_execution=TimingInfo(started_at=T0, finished_at=T0 + timedelta(seconds=40)))
    write_json(tdir / "result.json", result.model_dump_json(indent=4))
    return result


def main(out: Path) -> None:
    raw = {"trajectory_config": {"raw_content": True}}
    timeout = ExceptionInfo(exception_type="AgentTimeoutError",
                            exception_message="Agent execution timed out after 900s",
                            exception_traceback="Traceback (most recent call last):\n  ...\nAgentTimeoutError\n",
                            occurred_at=T0 + timedelta(minutes=2, seconds=40))
    build = ExceptionInfo(exception_type="EnvironmentStartTimeoutError", exception_message="image build timed out",
                          exception_traceback="Traceback (most recent call last):\n  ...\n", occurred_at=T0)
    results = [
        trial(out, "count-errors__t1-solved", 1, raw, raw_steps(T1_TURNS), 1.0),
        trial(out, "count-errors__t2-parse-error", 2, raw, raw_steps(T2_TURNS), 0.0, exception=timeout),
        trial(out, "count-errors__t3-all-messages", 3, {"store_all_messages": True}, structured_steps(), 1.0,
              metadata={"all_messages": chat(T1_TURNS)}),
        trial(out, "count-errors__t4-structured", 4, {}, structured_steps(), 1.0),
        trial(out, "count-errors__t5-no-agent", 5, raw, None, None, exception=build),
    ]
    trial(out, "count-errors__t6-running", 6, raw, raw_steps(T1_TURNS[:1]), None, finished=False)
    job = JobConfig(job_name=out.name, jobs_dir=Path("jobs"), agents=[AgentConfig(name="terminus-2", model_name=MODEL)])
    write_json(out / "config.json", job.model_dump_json(indent=4))
    stats = JobStats.from_trial_results(results, n_total_trials=6, n_running_trials=1)
    write_json(out / "result.json", JobResult(id=UUID(int=1), started_at=T0, finished_at=None, n_total_trials=6,
                                              stats=stats).model_dump_json(indent=4))


if __name__ == "__main__":
    if os.environ.get("PYTHONHASHSEED") != "0":  # Harbor dumps some sets: fix their order
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    main(Path(sys.argv[1]))
