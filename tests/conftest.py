"""Shared fixtures: tiny Qwen3 checkpoints built offline, and the gpu marker."""

from __future__ import annotations

import pytest
import torch

TINY_SHAPES = {
    # 0.6B-like: tied embeddings, heads*head_dim (4*32=128) != hidden (64).
    "tied": dict(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=32, ffn_size=128, tie_embeddings=True),
    # 8B-like: untied embeddings, heads*head_dim == hidden.
    "untied": dict(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16, ffn_size=96, tie_embeddings=False),
}


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
