"""What a resume may change, checked against the run's saved config.yaml.

A resume continues one run: its optimizer state, LR schedule and data order belong to the
saved configuration. Only what cannot make the continued run differ from one that was
never interrupted may change: the length of the run (the LR schedule is re-planned, see
training/schedule.py), logging, evaluation and checkpoint intervals, keep_last, and the
DP size (not a config key). Anything else is refused, naming the key, with the way to
start a new run from these weights instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nemo_terminal.errors import UserError

log = logging.getLogger("nemo_terminal.train")

MAY_CHANGE: tuple[str, ...] = (
    "run_dir", "train.max_steps", "train.epochs", "train.eval_interval",
    "checkpoint.save_interval", "checkpoint.save_final", "checkpoint.keep_last", "checkpoint.resume",
    "checkpoint.verify_hashes", "log.",
)
"""Dotted keys (or prefixes ending in '.') a resume may change."""


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _may_change(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in MAY_CHANGE)


def changed_keys(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) for every key both configs have and that differs."""
    a, b = _flatten(saved), _flatten(current)
    return [(k, a[k], b[k]) for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]


def check_resume_config(saved_yaml: Path, cfg, resume_from: Path) -> list[str]:
    """Refuse a resume whose config differs from `saved_yaml` in a key outside MAY_CHANGE;
    return the allowed changes (logged). A run without a saved config is not checked."""
    if not saved_yaml.is_file():
        log.warning("%s has no config.yaml to compare the resumed configuration with", saved_yaml.parent)
        return []
    try:
        saved = OmegaConf.to_container(OmegaConf.load(saved_yaml), resolve=True)
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as err:
        raise UserError(f"{saved_yaml} is unreadable ({err}); cannot check the resumed configuration") from None
    current = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    changes = changed_keys(saved, current)
    refused = [c for c in changes if not _may_change(c[0])]
    if refused:
        key, old, new = refused[0]
        more = f" (and {', '.join(k for k, _, _ in refused[1:])})" if len(refused) > 1 else ""
        raise UserError(
            f"resuming {resume_from}: {key} was {old!r} in {saved_yaml}, now {new!r}{more}. A resume may change "
            "only train.max_steps/epochs, the log/eval/checkpoint intervals, checkpoint.keep_last and the DP size. "
            f"Keep {key}={old!r} to resume; or start a new run from these weights: "
            f"model.megatron_dir={resume_from.parent} run_dir=<a new directory> checkpoint.resume=never"
        )
    allowed = [f"{k}: {old!r} -> {new!r}" for k, old, new in changes if k not in ("checkpoint.resume", "run_dir")]
    for line in allowed:
        log.info("resume changes %s", line)
    return allowed
