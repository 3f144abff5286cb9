"""The feature table in the warehouse: features of each transfer, computed once, as of its arrival.

`features.transfer_features` holds one row per transfer. A run computes the transfers that have
no row yet, against the whole ledger as history; rows already written never change (every
feature is point in time, so later rows and labels could not change them anyway).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl

from pipelines.features.definitions import FEATURE_DTYPES, FEATURE_NAMES
from pipelines.features.engine import JOB_ENVIRONMENT, compute_features, load_inputs
from pipelines.warehouse import FEATURE_TABLE, scalar, table_exists, warehouse

_SQL_TYPES = {pl.Float32: "FLOAT", pl.Float64: "DOUBLE"}
_COLUMNS = [
    ("transfer_id", "VARCHAR"),
    ("created_at", "TIMESTAMP WITH TIME ZONE"),
    *((name, _SQL_TYPES[FEATURE_DTYPES[name]]) for name in FEATURE_NAMES),
]


# Which catalogue the table holds: part of its data version, so that a table computed again with
# new features makes what was trained on the old one out of date, though its row count is the same.
CATALOGUE_VERSION = hashlib.sha256(json.dumps(_COLUMNS).encode()).hexdigest()[:12]


def _ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create the table; a table of another catalogue (features added, say) is dropped, so
    that every transfer is computed again with today's features: they are a pure function of
    the ledger, so the rebuilt rows are what the old ones would have been, plus the new."""
    con.execute("CREATE SCHEMA IF NOT EXISTS features")
    if table_exists(con, FEATURE_TABLE):
        stored = [tuple(row[:2]) for row in con.sql(f"DESCRIBE {FEATURE_TABLE}").fetchall()]
        if stored != _COLUMNS:
            con.execute(f"DROP TABLE {FEATURE_TABLE}")
    columns = ", ".join(f"{name} {sql_type} NOT NULL" for name, sql_type in _COLUMNS[:2])
    columns += "".join(f", {name} {sql_type}" for name, sql_type in _COLUMNS[2:])
    con.execute(f"CREATE TABLE IF NOT EXISTS {FEATURE_TABLE} ({columns})")


def refresh_feature_table(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Compute and store the features of every transfer that has none yet."""
    _ensure_table(con)
    missing = con.sql(
        f"""SELECT transfer_id FROM ledger.transfers
            WHERE transfer_id NOT IN (SELECT transfer_id FROM {FEATURE_TABLE})"""
    ).pl()["transfer_id"]
    if missing.is_empty():
        return {"computed": 0, "rows": scalar(con, f"SELECT count(*) FROM {FEATURE_TABLE}")}
    transfers, account_events, labels = load_inputs(con)
    targets = None if missing.len() == transfers.height else missing
    features = compute_features(transfers, account_events, labels, targets=targets)
    features = features.join(
        transfers.select("transfer_id", "created_at"), on="transfer_id", how="left"
    ).select("transfer_id", "created_at", *FEATURE_NAMES)
    con.register("_features", features)
    try:
        con.execute(f"INSERT INTO {FEATURE_TABLE} SELECT * FROM _features")
    finally:
        con.unregister("_features")
    return {
        "computed": features.height,
        "rows": scalar(con, f"SELECT count(*) FROM {FEATURE_TABLE}"),
    }


def refresh_feature_table_in_job_process(warehouse_path: Path) -> dict[str, int]:
    """`refresh_feature_table` in a process of its own, started with the engine's
    `JOB_ENVIRONMENT` (memory settings that must be in place when the process starts: see
    `features/engine/memory.py`); the caller must not hold the warehouse open. Returns what
    `refresh_feature_table` returned, and the environment settings the process ran with."""
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.features.table", str(warehouse_path)],
        env={**os.environ, **JOB_ENVIRONMENT},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        # The child's own last line says what failed (e.g. duckdb.IOException: ... lock ...).
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        cause = lines[-1] if lines else f"exit status {done.returncode}"
        # The first line names the cause; the child's whole trace follows, for the run's log.
        raise RuntimeError(
            f"computing the features of {warehouse_path} failed: {cause}\n{done.stderr}"
        )
    return json.loads(done.stdout.splitlines()[-1])


def read_features(
    con: duckdb.DuckDBPyConnection, *, transfer_ids: pl.Series | None = None
) -> pl.DataFrame:
    """Features joined with the transfer columns models and policies need."""
    if not table_exists(con, FEATURE_TABLE):
        raise LookupError(f"{FEATURE_TABLE} does not exist yet: materialize transfer_features")
    frame = con.sql(
        f"""SELECT t.transfer_id, t.created_at, t.payer_vpa, t.payee_vpa, t.payee_type, t.mcc,
                   t.amount_paise, t.channel, t.status, {", ".join("f." + n for n in FEATURE_NAMES)}
            FROM ledger.transfers t JOIN {FEATURE_TABLE} f USING (transfer_id)
            ORDER BY t.created_at"""
    ).pl()
    if transfer_ids is not None:
        frame = frame.filter(pl.col("transfer_id").is_in(transfer_ids.implode()))
    return frame


def main(argv: list[str]) -> None:
    """`python -m pipelines.features.table WAREHOUSE`: refresh the table, print JSON."""
    with warehouse(Path(argv[1])) as con:
        result = refresh_feature_table(con)
    result["environment"] = {name: os.environ.get(name) for name in JOB_ENVIRONMENT}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
