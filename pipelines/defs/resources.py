"""Resources shared by every domain, built from the instance settings (`pipelines.settings`)."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from pipelines.ledger.postgres import PostgresLedgerConfig
from pipelines.privacy import load_token_key
from pipelines.risk.registry import ModelRegistry
from pipelines.settings import DataDir, Settings
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
    """Where ledger rows come from: landing files always, a Postgres ledger when a DSN is set.

    The DSN is read from the settings at run time, never held as config: Dagster stores a run's
    resource config with the run and shows it in the UI."""

    settings: dg.ResourceDependency[Settings]
    landing_dir: str
    postgres_schema: str = Settings.model_fields["ledger_schema"].default
    freshness_hours: int = Settings.model_fields["freshness_hours"].default
    label_freshness_hours: int = Settings.model_fields["label_freshness_hours"].default

    @property
    def postgres(self) -> PostgresLedgerConfig | None:
        dsn = self.settings.ledger_dsn
        if dsn is None:
            return None
        return PostgresLedgerConfig(dsn=dsn.get_secret_value(), schema_name=self.postgres_schema)


class RiskResource(dg.ConfigurableResource):
    """The model registry and the hand-off to the transfer service (the training protocol's
    windows are the `settings` resource's)."""

    settings: dg.ResourceDependency[Settings]
    models_dir: str
    transfer_service_url: str | None = None
    ground_truth_path: str | None = None  # simulator truth: judges test windows, never training
    allowlist_path: str | None = None

    @property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(Path(self.models_dir))

    @property
    def operational_db_url(self) -> str:
        """The outbox's database (a secret: read from the settings, never held as config)."""
        return self.settings.operational_database_url


class AdoptionResource(dg.ConfigurableResource):
    """Where the adoption outputs go, and the key of the instance's personal-data tokens."""

    settings: dg.ResourceDependency[Settings]
    data_dir: str

    @property
    def token_key(self) -> bytes:
        """The setting `token_key` (read at run time, never held as config), else the data
        directory's own key."""
        configured = self.settings.token_key
        return load_token_key(
            DataDir.resolve(self.data_dir), configured.get_secret_value() if configured else None
        )

    @property
    def dashboards_dir(self) -> Path:
        return DataDir.resolve(self.data_dir).dashboards


def default_resources(settings: Settings) -> dict[str, Any]:
    """The resources of an instance, all read from its one `Settings` object."""
    paths = settings.paths
    truth = paths.ground_truth / "transfers.parquet"
    # The settings themselves: for the steps that need the protocol's windows, and for the
    # resources' secrets. A hardcoded resource has no config, so nothing of it is stored.
    shared = dg.ResourceDefinition.hardcoded_resource(settings, "the instance settings")
    return {
        "settings": shared,
        "warehouse": WarehouseResource(path=str(paths.warehouse)),
        "ledger_source": LedgerSourceResource(
            settings=shared,
            landing_dir=str(paths.landing),
            postgres_schema=settings.ledger_schema,
            freshness_hours=settings.freshness_hours,
            label_freshness_hours=settings.label_freshness_hours,
        ),
        "adoption": AdoptionResource(settings=shared, data_dir=str(paths.root)),
        "risk": RiskResource(
            settings=shared,
            models_dir=str(paths.models),
            transfer_service_url=settings.transfer_service_url,
            ground_truth_path=str(truth) if truth.exists() else None,
            allowlist_path=str(paths.allowlist),
        ),
    }
