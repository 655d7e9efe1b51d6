"""Shared fixtures: tiny Qwen3 checkpoints built offline, the gpu marker, Docker and Harbor (system tests)."""

from __future__ import annotations

import pytest
import torch

# Task files under fixtures/ (e.g. a Harbor task's tests/test_outputs.py) run inside containers, not here.
collect_ignore = ["fixtures"]

TINY_SHAPES = {
    # 0.6B-like: tied embeddings, heads*head_dim (4*32=128) != hidden (64).
    "tied": dict(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=32, ffn_size=128,
                 tie_embeddings=True),
    # 8B-like: untied embeddings, heads*head_dim == hidden.
    "untied": dict(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16, ffn_size=96,
                   tie_embeddings=False),
}


_RENDEZVOUS_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _no_leaked_rendezvous(monkeypatch):
    """A test that brings up a one-process world in this process sets RANK/MASTER_PORT in
    os.environ (and keeps the port listening); CLI subprocesses of later tests must not inherit
    them, or their own rendezvous fails with EADDRINUSE."""
    for name in _RENDEZVOUS_VARS:
        monkeypatch.delenv(name, raising=False)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """The offline Qwen3 tokenizer (HF directory)."""
    from nemo_terminal.models.tokenizer import write_qwen3_tokenizer

    out = tmp_path_factory.mktemp("qwen3_tokenizer")
    write_qwen3_tokenizer(out)
    return out


@pytest.fixture(scope="session", params=sorted(TINY_SHAPES))
def tiny_hf_dir(request, tmp_path_factory):
    """A random tiny Qwen3 in HF format, for each shape in TINY_SHAPES."""
    from nemo_terminal.models.tiny import write_tiny_model

    out = tmp_path_factory.mktemp(f"tiny_{request.param}")
    write_tiny_model(out, seed=0, force=True, **TINY_SHAPES[request.param])
    return out


@pytest.fixture(scope="session")
def tiny_tied_dir(tmp_path_factory):
    from nemo_terminal.models.tiny import write_tiny_model

    out = tmp_path_factory.mktemp("tiny_tied_only")
    write_tiny_model(out, seed=0, force=True, **TINY_SHAPES["tied"])
    return out


# --- System tools (tools/ci_system_deps.sh): skip without them, fail in CI ------------------------

BASE_IMAGE = "local/debian-tools:bookworm"


def _docker_missing() -> str | None:
    import subprocess

    from nemo_terminal.testing import find_tool

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
    """The docker CLI, with a running daemon, `docker compose` (v2) and BASE_IMAGE built offline."""
    from nemo_terminal.testing import find_tool, require

    require(_docker_missing())
    return str(find_tool("docker"))


@pytest.fixture(scope="session")
def harbor_exe(docker_ready):
    """Harbor's executable in its own venv (Harbor runs tasks in Docker, hence docker_ready)."""
    from nemo_terminal.harbor.install import HARBOR_VERSION, find_harbor
    from nemo_terminal.testing import require

    harbor = find_harbor()
    require(None if harbor else f"Harbor {HARBOR_VERSION} (its venv) is not installed")
    return harbor
