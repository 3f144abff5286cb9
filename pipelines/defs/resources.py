"""Resources shared by every domain: the warehouse and the ledger source."""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from pipelines.ledger.postgres import PostgresLedgerConfig
from pipelines.privacy import load_token_key
from pipelines.risk.registry import ModelRegistry
from pipelines.risk.settings import LoopSettings
from pipelines.settings import DataDir
from pipelines.warehouse import warehouse

LEDGER_DSN_ENV = "UPI_RISK_LEDGER_DSN"
OPERATIONAL_DB_ENV = "UPI_RISK_OPERATIONAL_DB_URL"
TRANSFER_SERVICE_ENV = "UPI_RISK_TRANSFER_SERVICE_URL"
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


class RiskResource(dg.ConfigurableResource):
    """The model registry, the training protocol and the hand-off to the transfer service."""

    models_dir: str
    operational_db_url: str
    transfer_service_url: str | None = None
    ground_truth_path: str | None = None  # simulator truth: judges test windows, never training
    allowlist_path: str | None = None
    # Defaults are LoopSettings' own, so that the two never disagree.
    test_days: int = LoopSettings.test_days
    delay_days: int = LoopSettings.delay_days
    folds: int = LoopSettings.folds
    maturity_days: int = LoopSettings.maturity_days
    hold_rate: float = LoopSettings.hold_rate
    review_capacity: int = LoopSettings.review_capacity
    delivery_window_hours: float = LoopSettings.delivery_window_hours

    @property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(Path(self.models_dir))

    @property
    def settings(self) -> LoopSettings:
        return LoopSettings(
            test_days=self.test_days,
            delay_days=self.delay_days,
            folds=self.folds,
            maturity_days=self.maturity_days,
            hold_rate=self.hold_rate,
            review_capacity=self.review_capacity,
            delivery_window_hours=self.delivery_window_hours,
        )


class AdoptionResource(dg.ConfigurableResource):
    """Where the adoption outputs go, and the key of the instance's personal-data tokens."""

    data_dir: str

    @property
    def token_key(self) -> bytes:
        return load_token_key(DataDir.resolve(self.data_dir))

    @property
    def dashboards_dir(self) -> Path:
        return DataDir.resolve(self.data_dir).dashboards


def default_resources(data_dir: DataDir | None = None) -> dict[str, dg.ConfigurableResource]:
    """Resources for the embedded defaults (data directory from `$UPI_RISK_DATA_DIR` or `data/`)."""
    data_dir = data_dir or DataDir.resolve()
    dsn = dg.EnvVar(LEDGER_DSN_ENV) if os.environ.get(LEDGER_DSN_ENV) else None
    truth = data_dir.ground_truth / "transfers.parquet"
    operational = (
        dg.EnvVar(OPERATIONAL_DB_ENV)
        if os.environ.get(OPERATIONAL_DB_ENV)
        else f"sqlite:///{data_dir.operational_db}"
    )
    return {
        "warehouse": WarehouseResource(path=str(data_dir.warehouse)),
        "ledger_source": LedgerSourceResource(landing_dir=str(data_dir.landing), postgres_dsn=dsn),
        "adoption": AdoptionResource(data_dir=str(data_dir.root)),
        "risk": RiskResource(
            models_dir=str(data_dir.models),
            operational_db_url=operational,
            transfer_service_url=os.environ.get(TRANSFER_SERVICE_ENV),
            ground_truth_path=str(truth) if truth.exists() else None,
            allowlist_path=str(data_dir.root / "allowlist.txt"),
            **_loop_overrides(data_dir),
        ),
    }


def _loop_overrides(data_dir: DataDir) -> dict[str, int]:
    """Protocol windows from `<data-dir>/risk_settings.json`, then `$UPI_RISK_<NAME>`: the demo's
    30 days of history need shorter windows than production's defaults."""
    names = ("test_days", "delay_days", "folds", "maturity_days")
    stored = (
        json.loads(data_dir.risk_settings.read_text()) if data_dir.risk_settings.exists() else {}
    )
    out = {name: int(stored[name]) for name in names if name in stored}
    out.update(
        {
            name: int(os.environ[f"UPI_RISK_{name.upper()}"])
            for name in names
            if os.environ.get(f"UPI_RISK_{name.upper()}")
        }
    )
    return out


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=default_resources(), executor=dg.in_process_executor)
