"""Synthetic trajectories in exactly the Terminal-Corpus format (FACTS.md §1).

No dataset hub is reachable here, so tests, the demo and the benchmark all run on records
this module writes: the terminus-2 agent prompt + "Task Description:" + terminal screen as the
first user turn; `<think>` + JSON keystroke answers as assistant turns; "New Terminal Output:",
parse-error and completion-confirmation user turns; the corpus's metadata columns. Lengths are
controllable, including the paper's distribution (mean ≈17.5K, median ≈14K tokens) and a tail
above any chosen sequence length.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

AGENT_PROMPT = (
    "You are an AI assistant tasked with solving command-line tasks in a Linux environment. "
    "You will be given a task description and the output from previously executed commands. "
    "Your goal is to solve the task by providing batches of shell commands.\n\n"
    "Format your response as JSON with the following structure:\n\n"
    '{\n  "analysis": "Analyze the current state based on the terminal output provided.",\n'
    '  "plan": "Describe your plan for the next steps.",\n'
    '  "commands": [\n    {\n      "keystrokes": "ls -la\\n",\n      "duration": 0.1\n    }\n  ],\n'
    '  "task_complete": true\n}\n\n'
    "Required fields:\n- \"analysis\": Your analysis of the current situation\n"
    "- \"plan\": Your plan for the next steps\n- \"commands\": Array of command objects to execute\n\n"
    "Optional fields:\n- \"task_complete\": Boolean indicating if the task is complete (defaults to false)\n\n"
    "The \"duration\" attribute specifies the number of seconds to wait for the command to complete "
    "before the next command will be executed. On immediate tasks (e.g., cd, ls, echo, cat) set a "
    "duration of 0.1 seconds. Never wait longer than 60 seconds; prefer to poll.\n\n"
    "Important notes:\n- Each command's keystrokes are sent exactly as written to the terminal\n"
    "- Do not include extra whitespace before or after the keystrokes unless it's part of the intended command\n"
    "- The text inside \"keystrokes\" will be used completely verbatim as keystrokes.\n"
)
CONFIRM_TURN = (
    "Current terminal state:\nNew Terminal Output:\n\n{prompt} \n\n\nAre you sure you want to mark the task as "
    "complete? This will trigger your solution to be graded and you won't be able to make any further "
    'corrections. If so, include "task_complete": true in your JSON response again.'
)
PARSE_ERRORS = (
    "ERROR: Missing required fields: plan",
    "ERROR: Invalid JSON: Expecting ',' delimiter: line 4 column 5 (char 97)",
    "ERROR: No valid JSON found in response",
    "WARNINGS: - Extra text detected before JSON object",
)
_WORDS = (
    "the file directory output install package error value config test build run check script "
    "server process version module path permission user data log line result command function "
    "variable option system network port service database table query index cache memory "
    "should need first then next verify confirm looks like seems missing found exists created "
    "updated failed passed using with from into over because since while after before now"
).split()
_SHELL = (
    "ls -la", "cat README.md", "pip install -r requirements.txt", "python3 solve.py", "grep -rn TODO src/",
    "cd /app", "make test", "git status", "apt-get install -y jq", "pytest -q", "echo done", "wc -l data.csv",
    "sed -i 's/foo/bar/' config.ini", "find . -name '*.py'", "chmod +x run.sh", "./run.sh", "head -n 20 log.txt",
)
CHARS_PER_TOKEN = 4.9  # measured for this generator's text with the Qwen3 tokenizer
PAPER_MEDIAN_TOKENS = 14_000
PAPER_SIGMA = math.sqrt(2 * math.log(17_500 / 14_000))  # lognormal: mean/median = exp(sigma²/2)


def _prose(rng: random.Random, n_words: int) -> str:
    words = rng.choices(_WORDS, k=max(1, n_words))
    lines, step = [], 12
    for i in range(0, len(words), step):
        lines.append(" ".join(words[i:i + step]))
    return ". ".join(lines).capitalize() + "."


def _screen(rng: random.Random, n_words: int, prompt: str) -> str:
    out = [f"{prompt} {rng.choice(_SHELL)}"]
    while n_words > 0:
        k = min(n_words, rng.randint(4, 14))
        out.append(" ".join(rng.choices(_WORDS, k=k)))
        n_words -= k
    return "\n".join(out) + f"\n{prompt} "


def _assistant(rng: random.Random, n_words: int, complete: bool, broken: bool, extra: str = "") -> str:
    think_words = n_words // 2
    answer: dict[str, Any] = {
        "analysis": _prose(rng, n_words // 4) + extra,
        "plan": _prose(rng, n_words // 4),
        "commands": [{"keystrokes": rng.choice(_SHELL) + "\n", "duration": rng.choice([0.1, 1.0, 5.0])}
                     for _ in range(rng.randint(1, 3))],
        "task_complete": complete,
    }
    if broken:
        del answer["plan"]
    body = json.dumps(answer, indent=2, ensure_ascii=False)
    return f"<think>\n{_prose(rng, think_words)}\n</think>\n\n{body}"


def make_record(
    rng: random.Random,
    *,
    target_tokens: int | None = None,
    n_turns: int | None = None,
    complete: bool | None = None,
    parse_error_rate: float = 0.1,
    chinese: bool = False,
    identity_leak: bool = False,
    task_text: str | None = None,
    source: str | None = None,
    tokens_per_turn: int = 350,
) -> dict[str, Any]:
    """One trajectory row with every Terminal-Corpus column (`source` only when given).

    target_tokens: approximate length (default: 300–3000, log-uniform). n_turns: assistant
    turns (default: one per `tokens_per_turn`; 1000 gives the paper's ≈17.5 turns at ≈17.5K).
    complete: end with a confirmed "task_complete": true (default: 60% of records).
    chinese / identity_leak plant what those filters look for in one assistant turn;
    task_text replaces the task description.
    """
    if target_tokens is None:
        target_tokens = int(math.exp(rng.uniform(math.log(300), math.log(3000))))
    complete = rng.random() < 0.6 if complete is None else complete
    n_turns = n_turns or max(1, min(200, round(target_tokens / tokens_per_turn)))
    words_left = max(40, int(target_tokens * CHARS_PER_TOKEN / 6.2) - 450)  # ~6.2 chars/word; prompt ≈450 words
    per_turn = max(16, words_left // (2 * n_turns))
    prompt = f"root@{rng.getrandbits(48):012x}:/app#"
    task = task_text or _prose(rng, rng.randint(30, 120))
    turns = [{"role": "user", "content": f"{AGENT_PROMPT}\nTask Description:\n{task}\n\n"
                                         f"Current terminal state:\nCurrent Terminal Screen:\n{prompt} \n\n\n"}]
    special = rng.randrange(n_turns)
    for i in range(n_turns):
        last = i == n_turns - 1
        broken = not last and rng.random() < parse_error_rate
        extra = ""
        if i == special and chinese:
            extra = " 检查文件是否存在。"
        if i == special and identity_leak:
            extra = " As DeepSeek, an AI assistant developed by DeepSeek, I will continue."
        says_complete = complete and (last or i == n_turns - 2)
        turns.append({"role": "assistant", "content": _assistant(rng, per_turn, says_complete, broken, extra)})
        if last:
            break
        if broken:
            user = f"Previous response had parsing errors:\n{rng.choice(PARSE_ERRORS)}\n\n" \
                   "Please fix these issues and provide a proper JSON response."
        elif says_complete:
            user = CONFIRM_TURN.format(prompt=prompt)
        else:
            user = "New Terminal Output:\n\n" + _screen(rng, per_turn, prompt)
        turns.append({"role": "user", "content": user})
    task_id = f"task-{rng.getrandbits(32):08x}"
    row = {
        "conversations": turns,
        "agent": "terminus-2",
        "model": "deepseek-ai/DeepSeek-V3.2",
        "model_provider": "hosted_vllm",
        "date": f"2025-11-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00",
        "task": task_id,
        "episode": f"episode-{n_turns - 1}",
        "run_id": f"run-{rng.getrandbits(32):08x}",
        "trial_name": f"{task_id}__{rng.getrandbits(24):06x}",
        "enable_thinking": True,
    }
    if source is not None:
        row["source"] = source
    return row


def paper_length(rng: random.Random) -> int:
    """A token count from a lognormal with the paper's adapter statistics (median 14K, mean 17.5K)."""
    return int(math.exp(rng.gauss(math.log(PAPER_MEDIAN_TOKENS), PAPER_SIGMA)))


def iter_records(n: int, seed: int, *, lengths: str = "default", long_fraction: float = 0.0,
                 long_tokens: int = 4000, chinese_fraction: float = 0.0, leak_fraction: float = 0.0,
                 **kwargs: Any) -> Iterator[dict[str, Any]]:
    """n records from one seed. lengths="paper" draws target_tokens from `paper_length`;
    long_fraction of the records get target_tokens=long_tokens (a tail above seq-length);
    chinese_fraction / leak_fraction of them carry what those filters drop."""
    rng = random.Random(seed)
    for _ in range(n):
        kw = dict(kwargs)
        if lengths == "paper":
            kw.setdefault("target_tokens", paper_length(rng))
            kw.setdefault("tokens_per_turn", 1000)
        if rng.random() < long_fraction:
            kw["target_tokens"] = long_tokens
        if chinese_fraction and rng.random() < chinese_fraction:
            kw["chinese"] = True
        if leak_fraction and rng.random() < leak_fraction:
            kw["identity_leak"] = True
        yield make_record(rng, **kw)


def write_jsonl(path: str | Path, n: int, seed: int, **kwargs: Any) -> Path:
    """Write n records as JSON lines (the corpus's JSONL shape)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in iter_records(n, seed, **kwargs):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_parquet(path: str | Path, n: int, seed: int, row_group: int = 64, **kwargs: Any) -> Path:
    """Write n records as parquet with the corpus's column types, streaming row groups."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = [pa.field("conversations", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))]
    fields += [pa.field(k, pa.string()) for k in
               ("agent", "model", "model_provider", "date", "task", "episode", "run_id", "trial_name")]
    fields.append(pa.field("enable_thinking", pa.bool_()))
    if kwargs.get("source") is not None:
        fields.append(pa.field("source", pa.string()))
    schema = pa.schema(fields)
    with pq.ParquetWriter(path, schema) as writer:
        rows: list[dict[str, Any]] = []
        for row in iter_records(n, seed, **kwargs):
            rows.append(row)
            if len(rows) == row_group:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows = []
        if rows or n == 0:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    return path
