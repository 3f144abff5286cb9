"""A batch of transfers: one int64 array per column, rows in step across the arrays."""

from __future__ import annotations

import numpy as np

# A day's transfers, legit and fraud alike; the fraud plan has all but `state`, the payer's.
BATCH = (
    "created",
    "payer",
    "payee",
    "amount",
    "channel",
    "device",
    "state",
    "status",
    "rc",
    "note",
    "ftype",
    "case",
    "victim_at",
    "bank_at",
)


def concat(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The rows of `batches`, one batch after another."""
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def take(batch: dict[str, np.ndarray], idx: np.ndarray | slice) -> dict[str, np.ndarray]:
    """The rows `idx` of `batch`."""
    return {k: v[idx] for k, v in batch.items()}
