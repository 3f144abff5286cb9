"""The Postgres ledger source, against a real PostgreSQL server started by the tests."""

import uuid

import psycopg
import pytest

from pipelines.ledger import contract as c
from pipelines.ledger.postgres import (
    PostgresLedgerConfig,
    create_ledger_tables,
    ingest_postgres,
    insert_rows,
)
from pipelines.warehouse import warehouse
from tests.factories import account_event, label, transfer

pytestmark = pytest.mark.postgres


@pytest.fixture
def ledger_schema(postgres_dsn):
    schema = f"ledger_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as pg:
        create_ledger_tables(pg, schema)
    return schema


def test_incremental_exactly_once_with_late_commits_and_bad_rows(
    postgres_dsn, ledger_schema, tmp_path
):
    config = PostgresLedgerConfig(
        dsn=postgres_dsn, schema_name=ledger_schema, page_rows=20, lookback_seq=100
    )
    db = tmp_path / "warehouse.duckdb"
    with psycopg.connect(postgres_dsn, autocommit=True) as pg:
        insert_rows(pg, ledger_schema, c.TRANSFERS, [transfer(i) for i in range(1, 51) if i != 45])
        insert_rows(pg, ledger_schema, c.ACCOUNTS, [account_event(i) for i in range(1, 8)])
        insert_rows(pg, ledger_schema, c.LABELS_STREAM, [label(i) for i in (3, 9)])

    with warehouse(db) as con:
        first = ingest_postgres(con, config)
        assert first.streams["transfers"].loaded == 49
        assert first.streams["transfers"].batches == 3  # pages of 20
        assert first.streams["accounts"].loaded == 7
        assert first.streams["labels"].loaded == 2

    with psycopg.connect(postgres_dsn, autocommit=True) as pg:
        # Sequence 45 commits late, below the watermark; 51 is new; 52 breaks the contract.
        insert_rows(
            pg,
            ledger_schema,
            c.TRANSFERS,
            [transfer(45), transfer(51), transfer(52, payee_vpa="no-at-sign")],
        )
        insert_rows(pg, ledger_schema, c.LABELS_STREAM, [label(20)])

    with warehouse(db) as con:
        second = ingest_postgres(con, config).streams["transfers"]
        assert second.loaded == 2
        assert second.quarantined == 1
        assert second.balanced
        # The look-back re-read rows already loaded: counted as duplicates, not loaded again.
        assert second.duplicates == second.rows_in - 3
        assert con.sql("SELECT count(*) FROM ledger.transfer_events").fetchall()[0][0] == 51
        assert (
            con.sql("SELECT count(DISTINCT transfer_id) FROM ledger.transfer_events").fetchall()[0][
                0
            ]
            == 51
        )
        q = con.sql(
            "SELECT source, position_kind, position, reason FROM ledger.quarantine"
        ).fetchall()
        assert q == [
            (
                f"{ledger_schema}.transfers",
                "ledger_seq",
                52,
                "payee_vpa: expected a VPA local@handle, got no-at-sign",
            )
        ]
        assert con.sql("SELECT count(*) FROM ledger.labels").fetchall()[0][0] == 3

        third = ingest_postgres(con, config)
        assert third.total().loaded == 0
        assert third.total().quarantined == 0
        assert con.sql("SELECT count(*) FROM ledger.transfer_events").fetchall()[0][0] == 51
