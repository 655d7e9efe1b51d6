"""The one way configs load: a structured dataclass, then YAML, then `key=value`, then explicit values.

Shared by `train` (training.config.Config) and `prepare` (data.pipeline.config.PrepareConfig),
so both accept the same override syntax and report errors the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nemo_terminal.errors import UserError

T = TypeVar("T")


def load_structured(schema: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                    explicit: dict[str, Any] | None = None) -> T:
    """Defaults < YAML file < `key=value` overrides < explicit (non-None) values -> validated dataclass.

    Dataclass `__post_init__` validation runs on the merged result; omegaconf
    errors (unknown key, wrong type, missing `???`) become one-line UserErrors
    naming the key.
    """
    try:
        merged = OmegaConf.structured(schema)
        if path:
            if not Path(path).is_file():
                raise UserError(f"config file {path} does not exist")
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise UserError(f"overrides must look like key=value, got {bad}")
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        given = {k: v for k, v in (explicit or {}).items() if v is not None}
        if given:
            merged = OmegaConf.merge(merged, OmegaConf.create(given))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        first = str(err).splitlines()[0]
        if "expected one of" in first:  # an enum field: name the key, the allowed values and the value
            allowed = first.split("expected one of", 1)[1].strip()
            raise UserError(f"{key} must be one of {allowed}, got {getattr(err, 'value', None)!r}") from None
        raise UserError(f"config error at {key!r}: {first}") from None
