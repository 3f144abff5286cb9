"""Resources shared by every domain, built from the instance settings (`pipelines.settings`)."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from pipelines.ledger.postgres import PostgresLedgerConfig
from pipelines.privacy import load_token_key
from pipelines.risk.registry import ModelRegistry
from pipelines.settings import ENV_PREFIX, DataDir, Settings
from pipelines.warehouse import warehouse

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
    postgres_schema: str = Settings.model_fields["ledger_schema"].default
    freshness_hours: int = Settings.model_fields["freshness_hours"].default
    label_freshness_hours: int = Settings.model_fields["label_freshness_hours"].default

    @property
    def postgres(self) -> PostgresLedgerConfig | None:
        if not self.postgres_dsn:
            return None
        return PostgresLedgerConfig(dsn=self.postgres_dsn, schema_name=self.postgres_schema)


class RiskResource(dg.ConfigurableResource):
    """The model registry and the hand-off to the transfer service (the training protocol's
    windows are the `settings` resource's)."""

    models_dir: str
    operational_db_url: str
    transfer_service_url: str | None = None
    ground_truth_path: str | None = None  # simulator truth: judges test windows, never training
    allowlist_path: str | None = None

    @property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(Path(self.models_dir))


class AdoptionResource(dg.ConfigurableResource):
    """Where the adoption outputs go, and the key of the instance's personal-data tokens."""

    data_dir: str
    configured_token_key: str | None = None  # setting `token_key`; else the data dir's own

    @property
    def token_key(self) -> bytes:
        return load_token_key(DataDir.resolve(self.data_dir), self.configured_token_key)

    @property
    def dashboards_dir(self) -> Path:
        return DataDir.resolve(self.data_dir).dashboards


def _secret(settings: Settings, name: str) -> str | dg.EnvVar | None:
    """A secret setting as the resource's config: by reference where it comes from the
    environment, so that the UI and the run storage never show its value."""
    value = getattr(settings, name)
    if value is None:
        return None
    env = f"{ENV_PREFIX}{name.upper()}"
    if os.environ.get(env) == value.get_secret_value():
        return dg.EnvVar(env)
    return value.get_secret_value()


def default_resources(settings: Settings) -> dict[str, Any]:
    """The resources of an instance, all read from its one `Settings` object."""
    paths = settings.paths
    truth = paths.ground_truth / "transfers.parquet"
    return {
        # The settings themselves, for the steps that need the protocol's windows.
        "settings": dg.ResourceDefinition.hardcoded_resource(settings, "the instance settings"),
        "warehouse": WarehouseResource(path=str(paths.warehouse)),
        "ledger_source": LedgerSourceResource(
            landing_dir=str(paths.landing),
            postgres_dsn=_secret(settings, "ledger_dsn"),
            postgres_schema=settings.ledger_schema,
            freshness_hours=settings.freshness_hours,
            label_freshness_hours=settings.label_freshness_hours,
        ),
        "adoption": AdoptionResource(
            data_dir=str(paths.root), configured_token_key=_secret(settings, "token_key")
        ),
        "risk": RiskResource(
            models_dir=str(paths.models),
            operational_db_url=_secret(settings, "operational_db_url")
            or f"sqlite:///{paths.operational_db}",
            transfer_service_url=settings.transfer_service_url,
            ground_truth_path=str(truth) if truth.exists() else None,
            allowlist_path=str(paths.allowlist),
        ),
    }
