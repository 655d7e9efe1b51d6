"""What each generation attempt asks for, decided up front from `--seed` alone.

Attempt i of a run gets its domain, its 3-5 skills, its difficulty, its seed problem and the
sampling seed sent to the server from (run seed, i) only, so a run is reproducible and an
interrupted run asks exactly the same questions again (and finds them in the cache).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_terminal.errors import UserError
from nemo_terminal.taskgen.resources import domains, taxonomy

DIFFICULTY_CHOICES = ("easy", "medium", "hard", "mixed")
MIN_SKILLS, MAX_SKILLS = 3, 5


@dataclass(frozen=True)
class Seed:
    """A seed problem: the problem, an optional domain label and an optional reference solution."""

    problem: str
    domain: str | None = None
    solution: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class Attempt:
    index: int
    mode: str  # seed | skill
    domain: str | None  # None: a seed without a known domain (the generator picks one)
    difficulty: str
    request_seed: int
    skills: tuple[str, ...] = ()
    seed: Seed | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.mode}-{self.domain or 'any'}-{self.index:06d}"


def _rng(run_seed: int, index: int, what: str) -> random.Random:
    return random.Random(f"{run_seed}:{index}:{what}")  # str seeds hash with sha512: stable everywhere


def request_seed(run_seed: int, index: int) -> int:
    """The per-attempt `seed` sent to the server (vLLM honours it per request)."""
    digest = hashlib.blake2b(f"{run_seed}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def sample_skills(domain: str, rng: random.Random) -> tuple[str, ...]:
    """3-5 distinct skills: one from each of the domain's preferred groups, the rest from any group."""
    tax = taxonomy()
    count = rng.randint(MIN_SKILLS, MAX_SKILLS)
    chosen: list[str] = []
    for group in tax["domains"][domain]["groups"]:
        chosen.append(rng.choice(tax["groups"][group]))
    rest = sorted({s for skills in tax["groups"].values() for s in skills} - set(chosen))
    chosen += rng.sample(rest, count - len(chosen))
    return tuple(chosen)


def read_seeds(path: str) -> list[Seed]:
    """JSONL: one {"problem": ..., "domain"?: ..., "solution"?: ..., "id"?: ...} per line."""
    seeds = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise UserError(f"--seeds {path}: {err.strerror}") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{lineno}: not JSON ({err.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("problem"), str) or not obj["problem"].strip():
            raise UserError(f"{path}:{lineno}: a seed needs a non-empty string field `problem`")
        for key in ("domain", "solution", "id"):
            if obj.get(key) is not None and not isinstance(obj[key], (str, int)):
                raise UserError(f"{path}:{lineno}: field `{key}` must be a string")
        seeds.append(Seed(obj["problem"], obj.get("domain"), obj.get("solution"),
                          None if obj.get("id") is None else str(obj["id"])))
    if not seeds:
        raise UserError(f"--seeds {path}: no seeds in the file")
    return seeds


def plan_attempts(mode: str, num: int, run_seed: int, selected_domains: list[str] | None,
                  difficulty: str, seeds: list[Seed] | None = None) -> list[Attempt]:
    """The `num` attempts of a run, in order. Seeds are used round-robin; skill-mode domains too."""
    if num < 1:
        raise UserError(f"--num must be >= 1, got {num}")
    if difficulty not in DIFFICULTY_CHOICES:
        raise UserError(f"--difficulty must be one of {DIFFICULTY_CHOICES}, got {difficulty!r}")
    chosen = list(selected_domains or domains())
    unknown = sorted(set(chosen) - set(domains()))
    if unknown:
        raise UserError(f"--domains: unknown {unknown}; choose from {domains()}")
    attempts = []
    for i in range(num):
        rng = _rng(run_seed, i, "plan")
        level = rng.choice(DIFFICULTY_CHOICES[:3]) if difficulty == "mixed" else difficulty
        if mode == "skill":
            domain = chosen[i % len(chosen)]
            attempts.append(Attempt(i, mode, domain, level, request_seed(run_seed, i),
                                    skills=sample_skills(domain, rng)))
        elif mode == "seed":
            if not seeds:
                raise UserError("--mode seed needs --seeds FILE")
            seed = seeds[i % len(seeds)]
            domain = seed.domain if seed.domain in domains() else None
            if domain is None and selected_domains and len(chosen) == 1:
                domain = chosen[0]
            attempts.append(Attempt(i, mode, domain, level, request_seed(run_seed, i), seed=seed))
        else:
            raise UserError(f"--mode must be seed or skill, got {mode!r}")
    return attempts
