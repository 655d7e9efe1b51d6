"""Terminal-Task-Gen: the paper's task generation pipeline (FACTS.md §7).

Prompts, seeds and skills become Harbor tasks (`adapt`, `generate`); Harbor runs a teacher over
them; the job directories become Terminal-Corpus records (`collect`) that `prepare` reads.
Prompts, the skill taxonomy, environment Dockerfiles and task templates are package data, not
strings in code, so they can be read and changed without touching the logic.
"""
