"""A start-up warning when pip replaced an NGC container's CUDA torch (TE and apex then break)."""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def torch_replaced_reason() -> str | None:
    """Why this torch looks like a pip replacement of the NGC image's one, or None.

    NGC PyTorch images set NVIDIA_PYTORCH_VERSION; their torch is a CUDA build. A CPU-only torch
    (torch.version.cuda None) or one that sees no GPU inside such an image is the usual trace of
    `pip install` pulling torch from PyPI over it (docs/cluster.md, "Installation").
    """
    ngc = os.environ.get("NVIDIA_PYTORCH_VERSION")
    if not ngc:
        return None
    if torch.version.cuda is None:
        return f"NGC PyTorch {ngc} image, but torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return f"NGC PyTorch {ngc} image, but torch {torch.__version__} sees no CUDA device"
    return None


def warn_if_torch_replaced() -> str | None:
    """Log the reason (once per call site) and return it; None when torch looks like the image's own."""
    reason = torch_replaced_reason()
    if reason:
        log.warning("%s: pip probably replaced the container's torch, and Transformer Engine will not import. "
                    "Reinstall with the image's constraints (docs/cluster.md, Installation) or use a fresh "
                    "container; on a node without GPUs ignore this.", reason)
    return reason
