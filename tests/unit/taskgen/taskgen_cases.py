"""The taskgen tests' shared data: seeds, expected outcome per replayed case, generate arguments."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
DATA = HERE / "data"
SEEDS = DATA / "seeds.jsonl"
BENCHMARK = DATA / "benchmark_instructions.txt"
HARBOR_JOB = DATA / "harbor_job"
# Small limits so that hand-written replies can be oversized; every good reply fits.
LIMIT_ARGS = ["--max-file-bytes", "4096", "--max-task-bytes", "6144"]
# seeds.jsonl, in order: the case of each attempt and the reason it must be rejected for (None: accepted).
EXPECTED = {
    "good_bare": None, "good_fenced": None, "good_prose": None, "good_ratelimited": None,
    "near_duplicate": "near_duplicate", "contaminated": "contaminated", "chinese": "chinese_chars",
    "identity_leak": "identity_leak", "path_escape": "unsafe_path", "absolute_path": "unsafe_path",
    "bad_weight": "bad_weight", "test_syntax": "test_syntax", "missing_function": "test_missing_function",
    "schema": "schema", "not_json_prose": "not_json", "not_json_pydict": "not_json",
    "truncated_length": "truncated_json", "truncated_open_fence": "truncated_json",
    "oversized_file": "oversized_file", "oversized_task": "oversized_task", "server_error": "request_failed",
}


def generate_args(url: str, out: Path, *extra: str) -> list[str]:
    return ["taskgen", "generate", "--mode", "seed", "--seeds", str(SEEDS), "--num", str(len(EXPECTED)),
            "--llm-url", url, "--model", "replay-teacher", "--out", str(out), "--seed", "7",
            "--decontaminate-file", str(BENCHMARK), "--max-retries", "1", "--retry-backoff", "0.01",
            "--concurrency", "3", *LIMIT_ARGS, *extra]

