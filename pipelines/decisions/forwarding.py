"""Labels and account events that reach the ledger by other routes, forwarded to the running
decision service.

Bank and victim reports, review verdicts (labels) and registrations, device binds, SIM changes
(account events) reach the warehouse through ingestion. The decision service's state needs them
as soon as they are known: label features, the block list, hours since a SIM change. A Dagster
sensor calls `forward_ledger_updates` after each ingestion; it posts what ingestion loaded after
a cursor (the ingestion batch id of each table) in batches.

Why a sensor and not the service tailing the store: the warehouse is one DuckDB file that the
jobs write, and a long-lived reader in every replica would contend for its lock; the sensor
reads it between runs, keeps its cursor where the runs are visible, and reaches every replica
through the load balancer (or all of them when they share a Redis state). Forwarding twice is
harmless: the service applies a label by its reported_at and an event by its event_time, and a
repeated one changes no feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import httpx

from pipelines.warehouse import table_exists

BATCH = 1_000
# table -> (endpoint, the columns the service takes)
_FEEDS = {
    "labels": ("/v1/labels", ("transfer_id", "label", "fraud_type", "source", "reported_at")),
    "account_events": (
        "/v1/account-events",
        ("event_id", "vpa", "event_type", "event_time", "device_id"),
    ),
}


@dataclass
class Forwarded:
    """What one forwarding pass sent, and the cursor to start the next one from."""

    cursor: dict[str, int]
    sent: dict[str, int] = field(default_factory=dict)
    unknown_transfers: int = 0  # labels about transfers the service's state does not hold


def forward_ledger_updates(
    con: duckdb.DuckDBPyConnection,
    service_url: str,
    cursor: dict[str, int] | None = None,
    *,
    client: httpx.Client | None = None,
    timeout_s: float = 10.0,
) -> Forwarded:
    """Post the labels and account events loaded after `cursor` ({table: last batch id}) to
    the decision service at `service_url`; each table's cursor moves once all its rows were accepted."""
    out = Forwarded(cursor=dict(cursor or {}))
    own = client is None
    http = client or httpx.Client(base_url=service_url, timeout=timeout_s)
    try:
        for table, (endpoint, columns) in _FEEDS.items():
            if not table_exists(con, f"ledger.{table}"):
                continue
            after = out.cursor.get(table, 0)
            rows = con.sql(
                f"SELECT {', '.join(columns)}, _batch_id FROM ledger.{table} "
                "WHERE _batch_id > ? ORDER BY _batch_id",
                params=[after],
            ).fetchall()
            sent = 0
            for start in range(0, len(rows), BATCH):
                chunk = rows[start : start + BATCH]
                items = [_item(columns, row) for row in chunk]
                response = http.post(endpoint, json={"items": items})
                response.raise_for_status()
                body = response.json()
                out.unknown_transfers += int(body.get("unknown", 0))
                sent += len(items)
            if rows:
                # Only once the whole table went: a failed post sends it all again next time.
                out.cursor[table] = rows[-1][-1]
            out.sent[table] = sent
    finally:
        if own:
            http.close()
    return out


def _item(columns: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
    item = {}
    for name, value in zip(columns, row[:-1], strict=True):
        if value is None:
            continue
        item[name] = value.isoformat() if hasattr(value, "isoformat") else value
    return item
