"""Where the embedded default storage lives: one data directory holds everything a run writes."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

DATA_DIR_ENV = "UPI_RISK_DATA_DIR"
DEFAULT_DATA_DIR = Path("data")


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
    def risk_settings(self) -> Path:
        """Optional overrides of the risk protocol windows for this instance."""
        return self.root / "risk_settings.json"

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
