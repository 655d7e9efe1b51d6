"""The closed sets of choices configs name, one enum each, and the numeric field checks they share.

str-valued enums: omegaconf validates them (a typo names the key and the allowed values), they
compare equal to their strings (`precision == "bf16"`), and they print and serialise as the bare
value, so YAML dumps and dataset manifests read as before. Member names equal their values.
"""

from __future__ import annotations

import enum
import math
from typing import Any, TypeVar

from nemo_terminal.errors import UserError

E = TypeVar("E", bound="Choice")


class Choice(str, enum.Enum):
    """Base of every config enum: behaves as its string value everywhere."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)

    @classmethod
    def parse(cls: type[E], value: Any, field: str) -> E:
        """`value` (a member or its string) as a member; a UserError naming `field` otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise UserError(f"{field} must be one of {cls.values()}, got {value!r}") from None


class AttentionBackend(Choice):
    """model.attention_backend: auto = te where Transformer Engine runs, else torch."""

    auto = "auto"
    te = "te"
    torch = "torch"
    local = "local"


class Precision(Choice):
    """train.precision: bf16 weights with fp32 master weights, or fp32 throughout (CPU tests)."""

    bf16 = "bf16"
    fp32 = "fp32"


class Recompute(Choice):
    """train.recompute: activation recomputation, trading compute for memory."""

    none = "none"
    selective = "selective"
    full = "full"


class ThinkingPolicy(Choice):
    """prepare's `thinking`: which assistant turns keep their <think> block."""

    keep = "keep"
    strip_history = "strip_history"
    drop = "drop"


class LengthPolicy(Choice):
    """prepare's `length_policy`: what happens to a trajectory longer than seq_length."""

    truncate_turns = "truncate_turns"
    truncate = "truncate"
    drop = "drop"


def check_int(field: str, value: int | None, minimum: int, fix: str = "", optional: bool = False) -> None:
    """`value` must be an integer >= minimum (or None when optional)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        hint = f"; {fix}" if fix else ""
        raise UserError(f"{field} must be an integer >= {minimum}{' or null' if optional else ''}, "
                        f"got {value!r}{hint}")


def check_number(field: str, value: float | None, *, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False, fix: str = "", optional: bool = False) -> None:
    """`value` must be a finite number in the interval [low, high] (ends open where asked)."""
    if value is None and optional:
        return
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if not bad:
        bad = value < low or value > high or (low_open and value == low) or (high_open and value == high)
    if bad:
        if high == math.inf:
            wanted = f"{'>' if low_open else '>='} {low:g}"
        else:
            wanted = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        hint = f"; {fix}" if fix else ""
        raise UserError(f"{field} must be a finite number {wanted}, got {value!r}{hint}")
