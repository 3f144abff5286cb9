"""The `upi-risk` command line: `commands` (the click group), `orchestration` (what the commands
run), `render` (what they print), `failures` (known failures as one line)."""

from pipelines.cli.commands import main

__all__ = ["main"]
