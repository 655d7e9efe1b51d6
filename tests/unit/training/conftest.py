"""Inputs for trainer tests: a tiny Qwen3 imported with `import`, short trajectories run through `prepare`.

Both are made by the real CLI in subprocesses, exactly as a user would; the
trajectories are short Terminal-Corpus-shaped records so that bins stay small
(the 151,936-token output layer dominates CPU time).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

SEQ_LENGTH = 256


def nt(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m nemo_terminal ARGS`; fail the test with its stderr if it fails."""
    out = subprocess.run([sys.executable, "-m", "nemo_terminal", *args], capture_output=True, text=True, **kwargs)
    assert out.returncode == 0, f"nemo-terminal {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out


def short_records(n: int, seed: int) -> list[dict]:
    """Terminal-Corpus-shaped records with 1-3 short assistant turns (varied lengths)."""
    rng = random.Random(seed)
    words = "ls cd cat grep echo make python pip git find sed awk tar curl chmod mkdir".split()
    records = []
    for i in range(n):
        task = f"Task Description:\nrun {rng.choice(words)} {i}\nCurrent terminal state:\nroot@box:/app# "
        turns = [{"role": "user", "content": task}]
        for k in range(rng.randint(1, 3)):
            cmd = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
            done = "true" if k == 2 else "false"
            turns.append({"role": "assistant", "content": (
                f"<think>\nrun {cmd}\n</think>\n\n"
                f'{{"analysis": "step {k}", "plan": "{cmd}", '
                f'"commands": [{{"keystrokes": "{cmd}\\n", "duration": 0.1}}], "task_complete": {done}}}'
            )})
            turns.append({"role": "user", "content": f"New Terminal Output:\n{cmd}\nroot@box:/app# "})
        turns.pop()  # end on an assistant turn
        records.append({
            "conversations": turns, "agent": "terminus-2", "model": "deepseek-ai/DeepSeek-V3.2",
            "model_provider": "deepseek", "date": "2026-01-01", "task": f"task-{i}",
            "episode": f"episode-{(len(turns) // 2) - 1}", "run_id": "run", "trial_name": f"trial-{i}",
            "enable_thinking": True,
        })
    return records


@pytest.fixture(scope="session")
def train_inputs(tmp_path_factory) -> dict[str, Path]:
    """{hf, megatron, data, data_cp2}: a tiny untied Qwen3 (HF + imported) and two prepared datasets."""
    root = tmp_path_factory.mktemp("train_inputs")
    hf, meg = root / "hf", root / "megatron"
    nt("tiny-model", "--out", str(hf), "--num-layers", "2", "--hidden-size", "64", "--num-heads", "4",
       "--num-kv-heads", "2", "--head-dim", "16", "--ffn-size", "128", "--no-tie-embeddings", "--seed", "0")
    nt("import", "--hf-dir", str(hf), "--out", str(meg), "--dtype", "fp32")
    jsonl = root / "trajectories.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in short_records(48, seed=3)))
    paths = {"hf": hf, "megatron": meg}
    # 4 layers, for pipeline stages with 2 virtual chunks each (pp=2 x vpp=2)
    hf4, meg4 = root / "hf4", root / "megatron4"
    nt("tiny-model", "--out", str(hf4), "--num-layers", "4", "--hidden-size", "64", "--num-heads", "4",
       "--num-kv-heads", "2", "--head-dim", "16", "--ffn-size", "128", "--no-tie-embeddings", "--seed", "1")
    nt("import", "--hf-dir", str(hf4), "--out", str(meg4), "--dtype", "fp32")
    paths["megatron4"] = meg4
    for name, extra in (("data", []), ("data_cp2", ["--cp-size", "2"])):
        out = root / name
        nt("prepare", "--input", str(jsonl), "--tokenizer", str(hf), "--out", str(out),
           "--seq-length", str(SEQ_LENGTH), *extra)
        paths[name] = out
    return paths
