"""Weighted reward of this task's tests. Written by nemo-terminal taskgen (not by the generator model).

The reward is the summed weight of the tests that passed (setup, call and teardown) divided by the
summed weight of all tests in weights.json, so a test that errors, is skipped or never runs counts 0.
"""

import json
import os
from pathlib import Path

WEIGHTS = json.loads((Path(__file__).parent / "weights.json").read_text())
REWARD_FILE = Path(os.environ.get("REWARD_FILE", "/logs/verifier/reward.txt"))
_passed: dict = {}


def pytest_runtest_logreport(report):
    name = report.nodeid.split("::")[-1].split("[")[0]
    if report.when == "call":
        _passed[name] = report.passed and _passed.get(name, True)
    elif report.failed:
        _passed[name] = False


def pytest_sessionfinish(session, exitstatus):
    total = sum(WEIGHTS.values())
    got = sum(w for name, w in WEIGHTS.items() if _passed.get(name) is True)
    REWARD_FILE.parent.mkdir(parents=True, exist_ok=True)
    REWARD_FILE.write_text(f"{got / total if total > 0 else 0.0:.6g}\n")
