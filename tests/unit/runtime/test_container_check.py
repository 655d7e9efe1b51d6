"""The NGC torch-replaced warning, on this CPU machine: an NGC marker with a CPU torch warns."""

from __future__ import annotations

import logging

import torch

from nemo_terminal.runtime.container_check import warn_if_torch_replaced


def test_warns_inside_an_ngc_image_without_cuda(monkeypatch, caplog):
    monkeypatch.setenv("NVIDIA_PYTORCH_VERSION", "25.11")
    with caplog.at_level(logging.WARNING, logger="nemo_terminal.runtime.container_check"):
        reason = warn_if_torch_replaced()
    if torch.cuda.is_available():  # a real GPU machine: nothing to warn about
        assert reason is None
        return
    assert reason is not None and "NGC PyTorch 25.11" in reason
    assert "replaced the container's torch" in caplog.text


def test_silent_outside_an_ngc_image(monkeypatch, caplog):
    monkeypatch.delenv("NVIDIA_PYTORCH_VERSION", raising=False)
    with caplog.at_level(logging.WARNING):
        assert warn_if_torch_replaced() is None
    assert caplog.text == ""
