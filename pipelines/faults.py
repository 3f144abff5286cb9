"""Crash points for fault-injection tests: die like `kill -9` at the Nth commit boundary.

Set `UPI_RISK_CRASH_AT=<name>:<n>` (for example `ingest:3` or `delivery:1`) and the process
kills itself with SIGKILL the n-th time it reaches a crash point called `name`: no handler,
no `finally`, no rollback runs, exactly as when an operator or the kernel kills it. Unset (the
normal case) a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

CRASH_AT_ENV = "UPI_RISK_CRASH_AT"

_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """Count a commit boundary of `name`; kill this process if it is the one asked for."""
    wanted = os.environ.get(CRASH_AT_ENV)
    if not wanted:
        return
    target, _, nth = wanted.rpartition(":")
    if target != name:
        return
    _reached[name] += 1
    if _reached[name] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
