"""Resources shared by every domain: the warehouse and the ledger source."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from pipelines.ledger.postgres import PostgresLedgerConfig
from pipelines.settings import DataDir
from pipelines.warehouse import warehouse

LEDGER_DSN_ENV = "UPI_RISK_LEDGER_DSN"
# Every asset or check that opens the DuckDB file joins this pool: DuckDB allows one writer
# process per file, and the instance's dagster.yaml limits the pool to one step at a time.
WAREHOUSE_POOL = "warehouse"


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file."""

    path: str

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse(Path(self.path), read_only=read_only) as con:
            yield con


class LedgerSourceResource(dg.ConfigurableResource):
    """Where ledger rows come from: landing files always, a Postgres ledger when a DSN is set."""

    landing_dir: str
    postgres_dsn: str | None = None
    postgres_schema: str = "ledger"
    freshness_hours: int = 48
    # Labels come in bursts days apart; a quiet day is not a stale feed.
    label_freshness_hours: int = 168

    @property
    def postgres(self) -> PostgresLedgerConfig | None:
        if not self.postgres_dsn:
            return None
        return PostgresLedgerConfig(dsn=self.postgres_dsn, schema_name=self.postgres_schema)


def default_resources(data_dir: DataDir | None = None) -> dict[str, dg.ConfigurableResource]:
    """Resources for the embedded defaults (data directory from `$UPI_RISK_DATA_DIR` or `data/`)."""
    data_dir = data_dir or DataDir.resolve()
    dsn = dg.EnvVar(LEDGER_DSN_ENV) if os.environ.get(LEDGER_DSN_ENV) else None
    return {
        "warehouse": WarehouseResource(path=str(data_dir.warehouse)),
        "ledger_source": LedgerSourceResource(landing_dir=str(data_dir.landing), postgres_dsn=dsn),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=default_resources(), executor=dg.in_process_executor)
