"""How many decoder layers each pipeline stage holds, even or uneven.

megatron-core splits `num_layers` evenly over `pp` stages unless the first and/or last stage is
given its own count (`num_layers_in_first/last_pipeline_stage`); the remaining layers are then
split evenly over the middle stages, and with interleaving (vpp) every stage's count is split
evenly over its vpp chunks (megatron-core `transformer_block.get_num_layers_to_build`). This
module computes the same split, so an impossible one is refused before any process group
exists, with a split that works in the message (a 28-layer model at pp=8, a 3-layer one at pp=2).
"""

from __future__ import annotations

from nemo_terminal.errors import UserError


def stage_layers(num_layers: int, pp: int, vpp: int | None = None, first: int | None = None,
                 last: int | None = None) -> list[int]:
    """Layers on each pipeline rank, in rank order; a UserError naming a working split if none."""
    chunks = vpp or 1
    problem = _problem(num_layers, pp, chunks, first, last)
    if problem:
        raise UserError(f"{problem}; {suggest(num_layers, pp, vpp)}")
    if pp == 1:
        return [num_layers]
    counts: list[int | None] = [first] + [None] * (pp - 2) + [last]
    fixed = [c for c in counts if c is not None]
    free = counts.count(None)
    middle = (num_layers - sum(fixed)) // free if free else 0
    return [c if c is not None else middle for c in counts]


def _problem(num_layers: int, pp: int, chunks: int, first: int | None, last: int | None) -> str:
    given = {"parallel.first_stage_layers": first, "parallel.last_stage_layers": last}
    for name, value in given.items():
        if value is not None and (value < 1 or value % chunks):
            return f"{name}={value} must be a positive multiple of vpp={chunks}"
    if pp == 1:
        return "parallel.first_stage_layers/last_stage_layers need parallel.pp >= 2" if any(
            v is not None for v in given.values()) else ""
    fixed = [v for v in (first, last) if v is not None]
    rest, free = num_layers - sum(fixed), pp - len(fixed)
    if rest < 0 or (free == 0 and rest != 0) or (free and (rest < free * chunks or rest % (free * chunks))):
        if not fixed:
            return f"parallel.pp={pp} x vpp={chunks} does not divide the {num_layers} layers"
        return (f"parallel.pp={pp} with first_stage_layers={first}, last_stage_layers={last} leaves {rest} of the "
                f"{num_layers} layers for {free} other stage(s) x vpp={chunks}, which does not divide them")
    return ""


def suggest(num_layers: int, pp: int, vpp: int | None = None) -> str:
    """A working first/last-stage split for this model at this pp, or what to change instead."""
    chunks = vpp or 1
    options = []
    for first in [None, *range(chunks, num_layers + 1, chunks)]:
        for last in [None, *range(chunks, num_layers + 1, chunks)]:
            if not _problem(num_layers, pp, chunks, first, last):
                options.append((first, last))
    if not options:
        return f"no split of {num_layers} layers over pp={pp} x vpp={chunks} exists; lower parallel.pp or vpp"
    even = [o for o in options if o == (None, None)]
    if even:
        return "unset parallel.first_stage_layers and last_stage_layers (the even split works)"

    def unevenness(o):
        counts = stage_layers(num_layers, pp, vpp, *o)
        return (max(counts) - min(counts), sum(v is not None for v in o))

    first, last = min(options, key=unevenness)
    settings = [f"parallel.{n}={v}" for n, v in (("first_stage_layers", first), ("last_stage_layers", last))
                if v is not None]
    return f"set {' '.join(settings)} ({stage_layers(num_layers, pp, vpp, first, last)} layers per stage)"
