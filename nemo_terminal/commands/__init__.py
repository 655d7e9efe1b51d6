"""Subcommands of `nemo-terminal`, one module each, imported only when run (CLI start-up time)."""
