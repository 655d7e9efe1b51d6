"""Backend choice is explicit: a broken Transformer Engine is named, never swallowed, and the choice is logged once."""

from __future__ import annotations

import logging

import pytest

from nemo_terminal.errors import UserError
from nemo_terminal.models import provider


@pytest.fixture
def gpu_without_te(monkeypatch):
    """A machine that reports a GPU; transformer_engine really fails to import here (not installed)."""
    monkeypatch.setattr(provider, "accelerator_present", lambda: True)
    error = provider.te_import_error()
    assert error is not None and error.startswith("import transformer_engine.pytorch failed: ")
    return error


def test_cpu_auto_is_torch_and_te_is_refused_with_the_reason():
    assert provider.resolve_attention_backend("auto") == "torch"
    with pytest.raises(UserError, match=r"attention_backend=te needs Transformer Engine on a GPU \(no CUDA device"):
        provider.resolve_attention_backend("te")


def test_auto_with_sequence_parallel_names_the_import_failure(gpu_without_te, caplog):
    with pytest.raises(UserError) as err:
        provider.resolve_attention_backend("auto", sequence_parallel=True)
    msg = str(err.value)
    assert gpu_without_te in msg and "ModuleNotFoundError" in msg
    assert "parallel.sequence_parallel=false" in msg and "\n" not in msg
    with caplog.at_level(logging.WARNING, logger=provider.__name__):  # without SP: torch, but said out loud
        assert provider.resolve_attention_backend("auto") == "torch"
    assert gpu_without_te in caplog.text


@pytest.mark.parametrize("backend", ["torch", "local"])
def test_local_spec_with_sequence_parallel_is_refused(backend):
    with pytest.raises(UserError, match=f"model.attention_backend={backend}; megatron-core's torch RMSNorm"):
        provider.resolve_attention_backend(backend, sequence_parallel=True)


def test_backend_is_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(provider, "_logged", set())
    with caplog.at_level(logging.INFO, logger=provider.__name__):
        provider.announce_backend("torch")
        provider.announce_backend("torch")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["attention backend: torch (nemo_terminal's packed/CP attention, kernel reference)"]
