"""Qwen3 config.json as transformers 4.51 and 5.x write it, read into one description.

Why this exists: a field that changes the math and that we silently drop costs a user a
training run (a transformers-5 `rope_parameters` with theta 5e6 read as the default 1e6 gives
a model that still runs, just wrong). So every field is in exactly one of three groups:

- modelled: the Qwen3 shape, the rope (`rope_theta`/`rope_scaling` or `rope_parameters`, types
  `default` and `yarn`), `tie_word_embeddings`, `rms_norm_eps`, the dtype (`torch_dtype`/`dtype`);
- accepted because it changes nothing while off (`IGNORED`, and the `FIXED` fields at their
  Qwen3 value);
- refused, naming the field: a `FIXED` field at another value, any other rope type, YaRN
  attention-scale overrides.

Anything else is unknown: a warning names it, and it is carried to the exported config.json.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from nemo_terminal.errors import UserError

log = logging.getLogger(__name__)

# Fields with one Qwen3 value: anything else changes the math and is refused.
FIXED: dict[str, Any] = {
    "attention_bias": False,
    "mlp_bias": False,
    "use_sliding_window": False,
    "hidden_act": "silu",
    "attention_dropout": 0.0,
    "partial_rotary_factor": 1.0,
}
# Inert while the fields above are off (or at inference only): accepted and carried to export.
IGNORED = frozenset({
    "sliding_window", "max_window_layers", "use_cache", "bos_token_id", "eos_token_id", "pad_token_id",
    "transformers_version", "initializer_range", "layer_types",
})
ROPE_KEYS = frozenset({"rope_theta", "rope_scaling", "rope_parameters"})
DTYPE_KEYS = ("torch_dtype", "dtype")
# YaRN keys we model (transformers' `_compute_yarn_parameters` defaults apply when absent).
YARN_KEYS = frozenset({"rope_type", "type", "rope_theta", "factor", "original_max_position_embeddings",
                       "beta_fast", "beta_slow", "truncate"})


def check_fixed(cfg: dict[str, Any], source: str) -> None:
    """Refuse a field that a dense Qwen3 always has at one value (attention_bias, sliding windows...)."""
    for key, want in FIXED.items():
        if key in cfg and cfg[key] is not None and cfg[key] != want:
            raise UserError(f"{source}: {key}={cfg[key]!r} is not supported (Qwen3 has {key}={want!r}); "
                            "this model is not a dense Qwen3 nemo_terminal can train")
    kinds = sorted({str(t) for t in cfg.get("layer_types") or []} - {"full_attention"})
    if kinds:
        raise UserError(f"{source}: layer_types contains {kinds}; only full_attention layers are supported "
                        "(sliding-window attention is not modelled)")


def read_dtype(cfg: dict[str, Any], source: str) -> str | None:
    """`torch_dtype` (transformers 4) or `dtype` (transformers 5); both, when they disagree, is refused."""
    values = {k: cfg[k] for k in DTYPE_KEYS if cfg.get(k) is not None}
    if len(set(map(str, values.values()))) > 1:
        raise UserError(f"{source}: torch_dtype={values['torch_dtype']!r} and dtype={values['dtype']!r} disagree; "
                        "keep one of them")
    return str(next(iter(values.values()))) if values else None


def read_rope(cfg: dict[str, Any], source: str) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, rope_scaling) from either form; rope_scaling is None (plain rope) or a YaRN dict
    with `rope_type`, `factor` and `original_max_position_embeddings` always present."""
    params = cfg.get("rope_parameters")
    if params is not None:
        params = _single_rope_parameters(params, cfg, source)
    theta_old, scaling_old = cfg.get("rope_theta"), cfg.get("rope_scaling")
    if params is None:
        theta = float(theta_old) if theta_old is not None else 10_000.0  # transformers' default_theta
        return theta, _scaling(scaling_old, cfg, source, "rope_scaling")
    theta_new = params.get("rope_theta", theta_old)
    if theta_new is None:
        theta_new = 10_000.0
    if theta_old is not None and float(theta_old) != float(theta_new):
        raise UserError(f"{source}: rope_theta={theta_old} and rope_parameters.rope_theta={theta_new} disagree; "
                        "keep one rope description")
    scaling = _scaling(params, cfg, source, "rope_parameters")
    if scaling_old is not None and _scaling(scaling_old, cfg, source, "rope_scaling") != scaling:
        raise UserError(f"{source}: rope_scaling={scaling_old} and rope_parameters={params} disagree; "
                        "keep one rope description")
    return float(theta_new), scaling


def _single_rope_parameters(params: Any, cfg: dict[str, Any], source: str) -> dict[str, Any]:
    """transformers 5 may nest rope_parameters per layer type; all Qwen3 layers share one."""
    if not isinstance(params, dict):
        raise UserError(f"{source}: rope_parameters must be an object, got {params!r}")
    nested = [k for k, v in params.items() if isinstance(v, dict)]
    if not nested:
        return params
    values = [params[k] for k in nested]
    if len(nested) != len(params) or any(v != values[0] for v in values):
        raise UserError(f"{source}: rope_parameters differ per layer type ({sorted(nested)}); "
                        "only one rope for every layer is supported")
    return values[0]


def _scaling(spec: Any, cfg: dict[str, Any], source: str, field: str) -> dict[str, Any] | None:
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise UserError(f"{source}: {field} must be an object, got {spec!r}")
    kind = spec.get("rope_type", spec.get("type", "default"))
    if spec.get("partial_rotary_factor", 1.0) != 1.0:
        raise UserError(f"{source}: {field}.partial_rotary_factor={spec['partial_rotary_factor']} is not supported")
    if kind == "default":
        return None
    if kind != "yarn":
        raise UserError(f"{source}: {field} rope_type={kind!r} is not supported; "
                        "nemo_terminal models the default rope and yarn only")
    _check_yarn_scale(spec, source, field)
    if spec.get("factor") is None:
        raise UserError(f"{source}: {field} is yarn but has no factor; add e.g. \"factor\": 2.0")
    out: dict[str, Any] = {
        "rope_type": "yarn",
        "factor": float(spec["factor"]),
        # transformers' default when the key is absent
        "original_max_position_embeddings": int(spec.get("original_max_position_embeddings")
                                                or cfg.get("max_position_embeddings", 40960)),
    }
    out.update({k: spec[k] for k in ("beta_fast", "beta_slow", "truncate") if spec.get(k) is not None})
    return out


def _check_yarn_scale(spec: dict[str, Any], source: str, field: str) -> None:
    """We model transformers' default YaRN attention factor, 0.1·ln(factor)+1; refuse overrides."""
    factor = float(spec.get("factor") or 1.0)
    default = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    given = spec.get("attention_factor")
    if given is not None and not math.isclose(float(given), default, rel_tol=1e-9):
        raise UserError(f"{source}: {field}.attention_factor={given} is not supported "
                        f"(only yarn's default {default:.6g}); remove it")
    if spec.get("mscale") and spec.get("mscale_all_dim"):
        raise UserError(f"{source}: {field}.mscale/mscale_all_dim are not supported; remove them")
    unknown = sorted(set(spec) - YARN_KEYS - {"attention_factor", "mscale", "mscale_all_dim",
                                              "partial_rotary_factor"})
    if unknown:
        raise UserError(f"{source}: {field} has yarn keys nemo_terminal does not model: {unknown}; remove them")


def warn_unknown(keys: list[str], source: str) -> None:
    if keys:
        log.warning("%s: fields %s are not modelled by nemo_terminal; they are kept as they are in exported "
                    "config.json files but do not affect import, training or verify", source, sorted(keys))
