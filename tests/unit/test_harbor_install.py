"""Finding Harbor's venv and building its command line (no Docker, no Harbor needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nemo_terminal.harbor import install
from nemo_terminal.harbor.run import OFFLINE_ENV, harbor_command, harbor_env


def _venv(root: Path, version: str = install.HARBOR_VERSION) -> Path:
    """A venv as pip leaves it: bin/harbor and Harbor's dist-info."""
    (root / "bin").mkdir(parents=True)
    exe = root / "bin" / "harbor"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / "lib" / "python3.12" / "site-packages" / f"harbor-{version}.dist-info").mkdir(parents=True)
    return exe


@pytest.fixture
def no_harbor(monkeypatch, tmp_path):
    """No explicit harbor, the system venv and the user venv both pointed at empty places."""
    monkeypatch.delenv(install.ENV_HARBOR, raising=False)
    monkeypatch.setenv(install.ENV_VENV, str(tmp_path / "system-venv"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_nothing_installed(no_harbor):
    assert install.find_harbor() is None
    with pytest.raises(FileNotFoundError, match="ci_system_deps.sh"):
        install.ensure_harbor()


def test_venv_with_the_pinned_version_is_found(no_harbor, tmp_path):
    assert install.find_harbor() is None
    exe = _venv(tmp_path / "system-venv")
    assert install.find_harbor() == exe


def test_venv_with_another_version_is_ignored(no_harbor, tmp_path):
    _venv(tmp_path / "system-venv", version="0.24.0")
    assert install.find_harbor() is None
    user = _venv(install.user_venv())
    assert install.find_harbor() == user


def test_explicit_path_wins(no_harbor, tmp_path, monkeypatch):
    _venv(tmp_path / "system-venv")
    mine = _venv(tmp_path / "mine")
    monkeypatch.setenv(install.ENV_HARBOR, str(mine))
    assert install.find_harbor() == mine
    other = _venv(tmp_path / "other")
    assert install.find_harbor(other) == other
    with pytest.raises(FileNotFoundError):
        install.find_harbor(tmp_path / "missing" / "harbor")


def test_command_line_encodes_kwargs_as_harbor_parses_them(tmp_path):
    cmd = harbor_command("harbor", tmp_path / "task", tmp_path / "jobs", "j1", "terminus-2",
                         model="hosted_vllm/m", agent_kwargs={"api_base": "http://h:1/v1",
                                                              "trajectory_config": {"raw_content": True}})
    assert cmd[:2] == ["harbor", "run"]
    flags = dict(zip(cmd[2:], cmd[3:], strict=False))
    assert flags["--agent"] == "terminus-2" and flags["--job-name"] == "j1" and flags["--model"] == "hosted_vllm/m"
    kwargs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--ak"]
    assert kwargs[0] == "api_base=http://h:1/v1"  # strings verbatim
    key, value = kwargs[1].split("=", 1)
    assert key == "trajectory_config" and json.loads(value) == {"raw_content": True}


def test_env_is_offline_and_drops_our_pythonpath(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere/torch")
    env = harbor_env({"X": "1"})
    assert "PYTHONPATH" not in env and env["X"] == "1"
    assert all(env[k] == v for k, v in OFFLINE_ENV.items())
    assert harbor_env(pythonpath=["/a", "/b"])["PYTHONPATH"] == os.pathsep.join(["/a", "/b"])
