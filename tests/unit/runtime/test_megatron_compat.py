"""megatron-core internals live in one module; an untested version warns once and changes nothing."""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

import pytest

from nemo_terminal.runtime import megatron_compat

PACKAGE = Path(megatron_compat.__file__).resolve().parents[1]


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(megatron_compat, "_warned", False)
    return monkeypatch


def test_tested_version_is_installed_and_declared():
    assert megatron_compat.installed_version() in megatron_compat.TESTED_VERSIONS
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    low, high = re.search(r'"megatron-core>=([\d.]+),<([\d.]+)"', pyproject).groups()
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert all(as_tuple(low) <= as_tuple(v) < as_tuple(high) for v in megatron_compat.TESTED_VERSIONS)


def test_untested_version_warns_once_naming_the_tested(fresh, caplog):
    fresh.setattr(megatron_compat, "installed_version", lambda: "0.17.0")
    with caplog.at_level(logging.WARNING, logger=megatron_compat.__name__):
        assert megatron_compat.check_version() is None
        megatron_compat.check_version()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "megatron-core 0.17.0 is untested" in warnings[0] and "0.16.1" in warnings[0]


def test_tested_version_is_silent(fresh, caplog):
    with caplog.at_level(logging.WARNING, logger=megatron_compat.__name__):
        megatron_compat.check_version()
    assert not caplog.records


def _private_megatron_uses(path: Path) -> list[str]:
    """Names starting with `_` imported from megatron, or read as attributes of a megatron module alias."""
    tree = ast.parse(path.read_text())
    aliases, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("megatron"):
            for a in node.names:
                aliases.add(a.asname or a.name)
                if a.name.startswith("_"):
                    found.append(a.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in aliases):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_private_megatron_names_only_in_the_compat_module():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "megatron_compat.py":
            continue
        uses = _private_megatron_uses(path)
        if uses:
            offenders[str(path.relative_to(PACKAGE))] = uses
    assert offenders == {}
    assert _private_megatron_uses(Path(megatron_compat.__file__))  # the check does see them
