"""The one configuration of an instance, and the layout of its data directory.

`Settings` is read, highest first, from the options given to it (the CLI passes its own), the
`UPI_RISK_*` environment variables, the data directory's `settings.toml`, then the defaults here.
The CLI, the Dagster resources, the notebooks' helpers and the scheduled runs all build it the
same way; nothing writes the process environment to pass a setting on.

This module must stay free of ML libraries: the Dagster definitions import it.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "UPI_RISK_"
DATA_DIR_ENV = f"{ENV_PREFIX}DATA_DIR"
DEFAULT_DATA_DIR = Path("data")
SETTINGS_FILE = "settings.toml"


class DataDir(BaseModel):
    """The layout of a data directory, so several instances can run side by side."""

    model_config = ConfigDict(frozen=True)

    root: Path

    @classmethod
    def resolve(cls, root: str | Path | None = None) -> DataDir:
        """The data directory given, else `$UPI_RISK_DATA_DIR`, else `data/` in the working directory."""
        chosen = root if root is not None else os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR)
        return cls(root=Path(chosen).expanduser().resolve())

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def ground_truth(self) -> Path:
        return self.root / "ground_truth"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def operational_db(self) -> Path:
        return self.root / "operational.sqlite"

    @property
    def models(self) -> Path:
        """The model registry of this instance (instances side by side keep their own)."""
        return self.root / "models"

    @property
    def online_state(self) -> Path:
        """The decision service's embedded feature state: a snapshot and an append-only log."""
        return self.root / "online-state"

    @property
    def settings_file(self) -> Path:
        """This instance's settings (TOML; keys are `Settings` field names)."""
        return self.root / SETTINGS_FILE

    @property
    def allowlist(self) -> Path:
        return self.root / "allowlist.txt"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def token_key(self) -> Path:
        """The key of this instance's personal-data tokens (see `pipelines.privacy`)."""
        return self.root / "token.key"

    @property
    def dashboards(self) -> Path:
        """The adoption dashboards: self-contained HTML pages that open from disk."""
        return self.reports / "dashboards"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    def is_instance(self) -> bool:
        """Whether the directory holds an instance: landing files, a warehouse or run history."""
        return self.root.is_dir() and any(
            path.exists() for path in (self.landing, self.warehouse, self.dagster_home)
        )

    def ensure(self) -> DataDir:
        """Create the directories a run writes into; return self."""
        for path in (self.root, self.landing, self.reports, self.dagster_home):
            path.mkdir(parents=True, exist_ok=True)
        return self


class Settings(BaseSettings):
    """Every setting of an instance (see the module docstring for where each value comes from)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    data_dir: Path = Field(DEFAULT_DATA_DIR, description="the instance's data directory")

    # Where the ledger comes from, besides the landing files.
    ledger_dsn: SecretStr | None = Field(None, description="Postgres ledger to read as well")
    ledger_schema: str = "ledger"
    freshness_hours: int = Field(48, gt=0, description="a stream older than this is stale")
    # Labels come in bursts days apart; a quiet day is not a stale feed.
    label_freshness_hours: int = Field(168, gt=0)

    # Where decisions go.
    operational_db_url: SecretStr | None = Field(
        None, description="the outbox's database (default: SQLite in the data directory)"
    )
    transfer_service_url: str | None = Field(None, description="where decisions are delivered")
    decision_service_url: str | None = Field(
        None, description="a running `upi-risk serve`: ingested labels and events go there too"
    )
    token_key: SecretStr | None = Field(
        None, description="key of personal-data tokens (default: the data directory's own)"
    )

    # The training / evaluation protocol and the hand-off to the transfer service.
    test_days: int = Field(7, gt=0)
    delay_days: int = Field(7, ge=0, description="gap between training and test, for labels")
    folds: int = Field(3, gt=0)
    maturity_days: int = Field(30, ge=0, description="an unlabelled transfer this old is legit")
    hold_rate: float = Field(0.005, gt=0.0, lt=1.0, description="share of transfers held")
    review_capacity: int = Field(100, gt=0, description="held transfers a day the team reviews")
    # Decisions go to the transfer service only for transfers this recent: older ones settled
    # long ago and would only come back as 409.
    delivery_window_hours: float = Field(2.0, gt=0.0)
    random_state: int = 0

    # The online decision service (`upi-risk serve`).
    decision_deadline_ms: float = Field(
        50.0, gt=0.0, description="a decision's features and score must be ready within this"
    )
    # What the service decides when the model cannot (after the hard rules): ALLOW keeps
    # payments flowing through an outage, HOLD sends them to review instead.
    decision_fallback: Literal["ALLOW", "HOLD"] = "ALLOW"
    state_backend: Literal["embedded", "redis"] = Field(
        "embedded", description="where the online feature state lives"
    )
    redis_url: SecretStr | None = Field(None, description="the Redis of the redis state backend")
    registry_poll_seconds: float = Field(
        2.0, gt=0.0, description="how often the service looks for a new live model"
    )

    @property
    def paths(self) -> DataDir:
        return DataDir(root=self.data_dir.expanduser().resolve())

    @property
    def operational_database_url(self) -> str:
        """The outbox's database: the setting, else the SQLite file in the data directory."""
        if self.operational_db_url is None:
            return f"sqlite:///{self.paths.operational_db}"
        return self.operational_db_url.get_secret_value()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _DataDirFile(settings_cls, init_settings)


class _DataDirFile(PydanticBaseSettingsSource):
    """The data directory's settings.toml; which directory is itself a setting (option or env)."""

    def __init__(self, settings_cls: type[BaseSettings], init: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._init = init

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads the file whole

    def __call__(self) -> dict[str, Any]:
        given = self._init().get("data_dir")
        path = DataDir.resolve(given).settings_file
        if not path.is_file():
            return {}
        try:
            values = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"{path}: not a readable TOML settings file ({exc})") from None
        if "data_dir" in values:
            raise ValueError(f"{path}: data_dir cannot be set inside the data directory")
        unknown = sorted(set(values) - set(self.settings_cls.model_fields))
        if unknown:
            raise ValueError(
                f"{path}: unknown settings {unknown}; "
                f"expected some of {sorted(self.settings_cls.model_fields)}"
            )
        return values


def write_settings_file(data_dir: DataDir, values: dict[str, Any]) -> Path:
    """Write `values` as the instance's settings.toml (flat keys, numbers and strings)."""
    Settings(data_dir=data_dir.root, **values)  # refuse what Settings would refuse
    lines = [
        "# Settings of this upi-risk instance; keys are pipelines.settings.Settings fields.",
        "# UPI_RISK_<NAME> environment variables and command options take precedence.",
    ]
    # JSON's scalars (numbers, true/false, quoted strings) are TOML's too.
    lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    data_dir.settings_file.write_text("\n".join(lines) + "\n")
    return data_dir.settings_file
