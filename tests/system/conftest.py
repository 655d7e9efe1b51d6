"""Fixtures for the system tests: Docker with compose v2 and the offline base image, and Harbor.

Each fixture skips its tests when the piece is missing, and fails them in CI (see
nemo_terminal.testing.require); tools/ci_system_deps.sh provides all of them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nemo_terminal.harbor.install import HARBOR_VERSION, find_harbor
from nemo_terminal.testing import find_tool, require

BASE_IMAGE = "local/debian-tools:bookworm"


def _docker_missing() -> str | None:
    docker = find_tool("docker")
    if docker is None:
        return "docker is not installed"
    checks = {
        "the Docker daemon is not running": [docker, "info"],
        "the docker compose v2 plugin is missing": [docker, "compose", "version"],
        f"the base image {BASE_IMAGE} is not built": [docker, "image", "inspect", BASE_IMAGE],
    }
    for missing, cmd in checks.items():
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            return missing
    return None


@pytest.fixture(scope="session")
def docker_ready() -> str:
    """The docker CLI, with a running daemon, `docker compose` and BASE_IMAGE."""
    require(_docker_missing())
    return str(find_tool("docker"))


@pytest.fixture(scope="session")
def harbor_exe(docker_ready) -> Path:
    """Harbor's executable in its own venv (Harbor runs tasks in Docker, hence docker_ready)."""
    harbor = find_harbor()
    require(None if harbor else f"Harbor {HARBOR_VERSION} (its venv) is not installed")
    assert harbor is not None
    return harbor
