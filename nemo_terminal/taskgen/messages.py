"""The chat messages of one generation attempt, from the prompt files in `prompts/`."""

from __future__ import annotations

from nemo_terminal.taskgen.envs import image_note
from nemo_terminal.taskgen.harbor_task import WORKDIR
from nemo_terminal.taskgen.plan import Attempt
from nemo_terminal.taskgen.resources import domains, prompt, read_text, taxonomy

DIFFICULTY_NOTES = {
    "easy": "a few steps with standard tools; the tests check one or two clear outputs.",
    "medium": "several steps that depend on each other, with at least one edge case the tests check.",
    "hard": "a multi-stage task where a naive approach fails on edge cases, scale or subtle format rules.",
}
GENERIC_IMAGE_NOTE = "Python 3 with pytest and the common command-line tools of a Debian system"


def system_message(attempt: Attempt) -> str:
    note = image_note(attempt.domain) if attempt.domain else GENERIC_IMAGE_NOTE
    return prompt("system", workdir=WORKDIR, domains=", ".join(f'"{d}"' for d in domains()), image_note=note)


def user_message(attempt: Attempt) -> str:
    if attempt.mode == "skill":
        assert attempt.domain is not None
        title = taxonomy()["domains"][attempt.domain]["title"]
        return prompt("skill", difficulty=attempt.difficulty, domain_title=title,
                      domain_prompt=read_text("prompts", "domains", f"{attempt.domain}.md").strip(),
                      skills="\n".join(f"- {s}" for s in attempt.skills),
                      difficulty_note=DIFFICULTY_NOTES[attempt.difficulty])
    seed = attempt.seed
    assert seed is not None
    if attempt.domain:
        hint = f'Domain: "{attempt.domain}". Difficulty: {attempt.difficulty}.'
    elif seed.domain:
        hint = f'The seed is labelled "{seed.domain}"; choose the closest domain. Difficulty: {attempt.difficulty}.'
    else:
        hint = f"Choose the domain that fits best. Difficulty: {attempt.difficulty}."
    solution = prompt("seed_solution", solution=seed.solution.strip()) if seed.solution else ""
    return prompt("seed", domain_hint=hint, problem=seed.problem.strip(), solution_block=solution)


def messages(attempt: Attempt) -> list[dict[str, str]]:
    return [{"role": "system", "content": system_message(attempt)},
            {"role": "user", "content": user_message(attempt)}]
