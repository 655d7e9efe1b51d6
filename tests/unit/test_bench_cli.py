"""Every benchmark subject's CLI parses: `tools/bench.py SUBJECT --help` must not rot.

Parsers only (no subject runs): the benchmarks themselves are scripts, not timed tests.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(TOOLS))
    try:
        yield importlib.import_module("bench")
    finally:
        sys.path.remove(str(TOOLS))


@pytest.mark.parametrize("subject", ["convert", "prepare", "loader", "step"])
def test_subject_help_parses(bench, subject, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main([subject, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_quick_presets_parse(bench):
    for subject, argv in bench.QUICK.items():
        module = importlib.import_module(bench.MODULES[subject])
        module.build_parser().parse_args(argv)


def test_unknown_subject_is_refused(bench, capsys):
    assert bench.main(["nope"]) == 2
    assert "choose one of" in capsys.readouterr().err
