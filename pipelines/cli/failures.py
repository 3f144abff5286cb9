"""Known failures as one line that names the cause and what to do.

A failed step's full trace stays in its run's log (the Dagster UI, `make ui`); the command prints
one line per failure instead. A failure this module does not know is printed as its step and the
first line of its message, with the run to look up.
"""

import errno
import re
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from pipelines.settings import ENV_PREFIX, Settings
from pipelines.warehouse import EVENT_TABLES

# Where a setting the message names can be given, for the hint of a bad value.
_SETTING_SOURCES = f"a command option, {ENV_PREFIX}<NAME> or the data directory's settings.toml"


def settings_error(exc: ValidationError | ValueError) -> str:
    """One line for settings that do not validate, naming each bad setting."""
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        return f"invalid settings ({problems}); set them in {_SETTING_SOURCES}"
    return str(exc).splitlines()[0]


# The steps that read the Postgres ledger (each ledger stream's asset is named after its table);
# elsewhere a database error is the outbox's.
LEDGER_STEPS = tuple(table.split(".")[-1] for table in EVENT_TABLES.values())


def explain(chain: list[tuple[str, str]], settings: Settings, step: str = "") -> str | None:
    """The one line for a known failure, from its error chain (class name, message) and the
    step it failed in (if any), or None."""
    messages = " | ".join(message for _, message in chain)
    classes = {name for name, _ in chain}
    paths = settings.paths
    if "No space left on device" in messages or f"[Errno {errno.ENOSPC}]" in messages:
        return f"the disk holding {paths.root} is full: free some space, then run again"
    if "Could not set lock" in messages:
        return (
            f"the warehouse {paths.warehouse} is in use by another process (a notebook or "
            "another program holds it open for writing): close it, then run again"
        )
    if "OperationalError" in classes and "connection" in messages.lower():
        if step and not step.startswith(LEDGER_STEPS):
            return (
                f"{step}: cannot reach the operational database ({_server(messages)}): check "
                f"{ENV_PREFIX}OPERATIONAL_DB_URL, and that the server is running"
            )
        return (
            f"cannot reach the Postgres ledger ({_server(messages)}): check --postgres-dsn or "
            f"{ENV_PREFIX}LEDGER_DSN, and that the server is running"
        )
    return None


def explain_exception(exc: BaseException, settings: Settings) -> str | None:
    """The one line for a known failure raised outside a run (e.g. opening the warehouse)."""
    chain = []
    seen: BaseException | None = exc
    while seen is not None:
        chain.append((type(seen).__name__, str(seen)))
        seen = seen.__cause__ or seen.__context__
    return explain(chain, settings)


def one_line_failures(summary: dict[str, Any], settings: Settings) -> list[str]:
    """One line per failed step of every run a command's summary holds."""
    lines = []
    for run in _runs(summary):
        for error in run.get("errors", []):
            known = explain([tuple(pair) for pair in error["chain"]], settings, error["step"])
            if known is None:
                known = (
                    f"{error['step']}: {_cause(error['chain'])} "
                    f"(full trace: run {run['run_id']}, `make ui`)"
                )
            if known not in lines:
                lines.append(known)
    return lines


def _runs(summary: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The run summaries inside a command's summary (the demo's holds several)."""
    if "run_id" in summary:
        yield summary
    for part in ("training", "scoring"):
        if isinstance(summary.get("risk"), dict) and part in summary["risk"]:
            yield summary["risk"][part]
    yield from (summary.get("adoption") or {}).get("runs", [])


def _cause(chain: list[tuple[str, str]]) -> str:
    """The first line of the innermost error that is not Dagster's wrapper of it."""
    ours = [message for name, message in chain if not name.startswith("Dagster")] or [
        message for _, message in chain
    ]
    return (ours[-1].splitlines() or ["failed"])[0] if ours else "failed"


def _server(messages: str) -> str:
    """`host:port` from a libpq connection error, never the DSN (it may hold a password)."""
    found = re.search(r'server at "([^"]+)", port (\d+)', messages)
    if found:
        return f"{found.group(1)}:{found.group(2)}"
    found = re.search(r'connection to server on socket "([^"]+)"', messages)
    return f"socket {found.group(1)}" if found else "the server refused or timed out"
