"""Current state built from the event tables: one row per transfer, one row per account."""

from __future__ import annotations

from typing import Any

import duckdb

from pipelines.ledger.contract import TRANSFERS
from pipelines.warehouse import scalar, table_exists

_TRANSFER_COLUMNS = ", ".join(TRANSFERS.columns)

# The latest row of a transfer_id is its current state, whatever order the rows arrived in.
_LATEST_TRANSFERS = f"""
    SELECT {_TRANSFER_COLUMNS}, first_seq, events, _batch_id AS last_batch_id
    FROM (
        SELECT *, min(ledger_seq) OVER w AS first_seq, count(*) OVER w AS events,
               row_number() OVER (PARTITION BY transfer_id ORDER BY ledger_seq DESC) AS _rank
        FROM ledger.transfer_events
        WHERE {{where}}
        WINDOW w AS (PARTITION BY transfer_id)
    ) WHERE _rank = 1
"""


def refresh_transfers(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Bring `ledger.transfers` up to date with the events loaded since its last refresh."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS ledger.current_state_watermarks "
        "(table_name VARCHAR PRIMARY KEY, last_batch_id BIGINT NOT NULL)"
    )
    last = con.sql(
        "SELECT last_batch_id FROM ledger.current_state_watermarks WHERE table_name = 'transfers'"
    ).fetchall()
    newest = scalar(con, "SELECT coalesce(max(_batch_id), 0) FROM ledger.transfer_events")
    con.execute("BEGIN TRANSACTION")
    try:
        if not last or not table_exists(con, "ledger.transfers"):
            con.execute(
                "CREATE OR REPLACE TABLE ledger.transfers AS "
                + _LATEST_TRANSFERS.format(where="true")
                + " ORDER BY created_at"
            )
            changed = scalar(con, "SELECT count(*) FROM ledger.transfers")
            span = con.sql("SELECT min(created_at), max(created_at) FROM ledger.transfers")
            changed_span = span.fetchall()[0]
        else:
            # Only transfers that received rows since the last refresh can have changed.
            touched = (
                "transfer_id IN (SELECT transfer_id FROM ledger.transfer_events "
                f"WHERE _batch_id > {int(last[0][0])})"
            )
            con.execute(f"CREATE TEMP TABLE _touched AS {_LATEST_TRANSFERS.format(where=touched)}")
            changed = scalar(con, "SELECT count(*) FROM _touched")
            changed_span = con.sql(
                "SELECT min(created_at), max(created_at) FROM _touched"
            ).fetchall()[0]
            con.execute(
                "DELETE FROM ledger.transfers WHERE transfer_id IN (SELECT transfer_id FROM _touched)"
            )
            con.execute("INSERT INTO ledger.transfers SELECT * FROM _touched")
            con.execute("DROP TABLE _touched")
        con.execute(
            "INSERT OR REPLACE INTO ledger.current_state_watermarks VALUES ('transfers', ?)",
            [newest],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    total = scalar(con, "SELECT count(*) FROM ledger.transfers")
    # When the changed transfers were made: the days whose daily aggregates are now stale.
    return {
        "transfers": total,
        "changed": changed,
        "changed_from": changed_span[0],
        "changed_until": changed_span[1],
    }


def refresh_accounts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rebuild `ledger.accounts`: one row per VPA with its lifecycle milestones."""
    con.execute(
        """CREATE OR REPLACE TABLE ledger.accounts AS
        SELECT vpa,
               min(event_time) FILTER (event_type = 'REGISTERED') AS registered_at,
               min(event_time) FILTER (event_type = 'BANK_LINKED') AS bank_linked_at,
               max(event_time) FILTER (event_type = 'DEVICE_BOUND') AS last_device_bound_at,
               arg_max(device_id, event_time) FILTER (event_type = 'DEVICE_BOUND') AS device_id,
               max(event_time) FILTER (event_type = 'SIM_CHANGED') AS last_sim_changed_at,
               max(event_time) FILTER (event_type = 'PIN_RESET') AS last_pin_reset_at,
               max(event_time) FILTER (event_type = 'DEREGISTERED') AS deregistered_at,
               arg_max(state, event_time) FILTER (state IS NOT NULL) AS state,
               count(*) AS events
        FROM ledger.account_events
        GROUP BY vpa
        ORDER BY vpa"""
    )
    return {"accounts": scalar(con, "SELECT count(*) FROM ledger.accounts")}
