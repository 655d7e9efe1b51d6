"""Harbor (the terminal-agent benchmark harness) driven from its own Python >= 3.12 venv.

install: find or create that venv (`ensure_harbor`); run: build and run `harbor run`
(`run_harbor`); jobs: read the job directories it writes. Nothing here imports Harbor itself.
"""
