"""Checks that need the model and the data together, made before the model is built."""

from __future__ import annotations

from nemo_terminal.errors import UserError


def check_context_length(seq_length: int, max_position_embeddings: int, yarn_factor: float | None,
                         yarn_original: int) -> None:
    """A packed sequence must fit the positions the model was trained for (or stretched to, by YaRN).

    Beyond max_position_embeddings plain RoPE extrapolates: the run trains, but on positions the
    base model never saw, which silently degrades it.
    """
    if seq_length <= max_position_embeddings:
        return
    if yarn_factor:
        raise UserError(
            f"the data's seq_length={seq_length} exceeds the {max_position_embeddings} positions that "
            f"model.yarn_factor={yarn_factor} x model.yarn_original_max_position={yarn_original} gives; "
            f"raise model.yarn_factor to at least {seq_length / yarn_original:g}, or prepare shorter sequences"
        )
    raise UserError(
        f"the data's seq_length={seq_length} exceeds the model's max_position_embeddings={max_position_embeddings} "
        f"and YaRN is off: set model.yarn_factor (e.g. {max(2.0, seq_length / 32768):g} with "
        "model.yarn_original_max_position=32768, as Qwen3 recommends), or prepare the data with "
        f"--seq-length <= {max_position_embeddings}"
    )
