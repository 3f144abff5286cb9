"""Warehouse access for analyst notebooks: read-only, and people only as keyed tokens.

    from pipelines.analyst import open_warehouse

    with open_warehouse() as wh:                  # <data-dir>/warehouse.duckdb, read-only
        wh.tables()                               # what is there, with a one-line meaning
        wh.sql("SELECT channel, count(*) AS n FROM transfers GROUP BY 1")
        wh.table("adoption.daily_active")

The connection carries temporary views (no copies) over the warehouse in which every VPA is a
keyed token (`pipelines.privacy`): `transfers`, `accounts`, `account_events`, `labels`, and
`features`, `scores` and `decisions` once the risk pipeline has written them. The `adoption.*` marts hold
tokens already and are read as they are. SQL can call `vpa_token(v)` too.

Every result is checked before it is returned: a string value that looks like a VPA
(`local@handle`) is refused with `RawVpaError`, so a query against the raw `ledger.*` tables
cannot put personal data into a notebook by accident. (It is a guard against accidents, not
against someone set on getting round it.)

A read-only DuckDB connection still locks the file against writers: close the warehouse (or use
`with`) when done, or `upi-risk` jobs cannot write to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import polars as pl

from pipelines.adoption.marts import MARTS, SCHEMA
from pipelines.privacy import TOKEN_PREFIX, load_token_key, register_token_macro, vpa_token
from pipelines.settings import DEFAULT_DATA_DIR, DataDir, Settings
from pipelines.warehouse import DECISIONS_TABLE, FEATURE_TABLE, SCORES_TABLE, connect

DEVICE_TOKEN_PREFIX = "d_"

# The contract's VPA_PATTERN unanchored, case-blind and cut to the least it can match (2 chars
# @ 2 chars): a string that merely contains a VPA is caught too (a raw JSON record, an upper-cased
# VPA). The tests check it against the contract's pattern.
VPA_LIKE_PATTERN = "(?i)[a-z0-9._-]{2}@[a-z0-9]{2}"


class WarehouseNotFoundError(FileNotFoundError):
    """There is no warehouse file where the data directory says it should be."""


class WarehouseBusyError(RuntimeError):
    """Another process has the warehouse open for writing."""


class MissingTableError(LookupError):
    """The table or view asked for is not in this warehouse (yet)."""


class RawVpaError(ValueError):
    """A query result holds raw VPAs; notebooks see people only as tokens."""


@dataclass(frozen=True)
class AnalystView:
    """A temporary view analysts query by `name`, reading `source`, with its meaning."""

    name: str
    source: str
    meaning: str
    select: str


VIEWS: tuple[AnalystView, ...] = (
    AnalystView(
        "transfers",
        "ledger.transfers",
        "one row per transfer in its current status; payer, payee and device as tokens, "
        "the free-text note reduced to has_note",
        """SELECT transfer_id, created_at, vpa_token(payer_vpa) AS payer_token,
                  vpa_token(payee_vpa) AS payee_token, payee_type, mcc, amount_paise, currency,
                  channel, device_token(payer_device_id) AS payer_device_token, payer_state,
                  status, response_code, note IS NOT NULL AND note <> '' AS has_note,
                  ledger_seq, events
           FROM ledger.transfers""",
    ),
    AnalystView(
        "accounts",
        "ledger.accounts",
        "one row per user: registration, bank link, latest device bind / SIM change / PIN "
        "reset, deregistration, state",
        """SELECT vpa_token(vpa) AS user_token, registered_at, bank_linked_at,
                  last_device_bound_at, device_token(device_id) AS device_token,
                  last_sim_changed_at, last_pin_reset_at, deregistered_at, state, events
           FROM ledger.accounts""",
    ),
    AnalystView(
        "account_events",
        "ledger.account_events",
        "every account lifecycle event (REGISTERED, BANK_LINKED, DEVICE_BOUND, SIM_CHANGED, "
        "PIN_RESET, DEREGISTERED)",
        """SELECT event_id, event_time, vpa_token(vpa) AS user_token, event_type,
                  device_token(device_id) AS device_token, state
           FROM ledger.account_events""",
    ),
    AnalystView(
        "labels",
        "ledger.labels",
        "fraud / legit labels as they were reported (several per transfer possible), "
        "with fraud_type, source and reported_at",
        "SELECT transfer_id, label, fraud_type, source, reported_at FROM ledger.labels",
    ),
    AnalystView(
        "features",
        FEATURE_TABLE,
        "point-in-time features of each transfer (meanings: pipelines/features/definitions.py)",
        f"SELECT * FROM {FEATURE_TABLE}",
    ),
    AnalystView(
        "scores",
        SCORES_TABLE,
        "risk score, decision and reason codes per transfer and model version "
        "(shadow = a challenger's score, not acted on)",
        f"SELECT * FROM {SCORES_TABLE}",
    ),
    AnalystView(
        "decisions",
        DECISIONS_TABLE,
        "the decision of record per transfer: its first live decision, the one the transfer "
        "service acted on",
        f"SELECT * FROM {DECISIONS_TABLE}",
    ),
)


def open_warehouse(data_dir: str | Path | None = None) -> Warehouse:
    """Open `<data-dir>/warehouse.duckdb` read-only with the tokenized views in place.

    `data_dir` defaults to `$UPI_RISK_DATA_DIR`, else `data/` in the working directory, else the
    project's own `data/` (so a notebook started in `notebooks/` finds the demo's data).
    """
    paths = _resolve_data_dir(data_dir)
    if not paths.warehouse.is_file():
        raise WarehouseNotFoundError(
            f"no warehouse at {paths.warehouse}: build one with `make demo` (or "
            "`.venv/bin/upi-risk demo --data-dir DIR`), or point $UPI_RISK_DATA_DIR / "
            "open_warehouse(data_dir=...) at a data directory that has one"
        )
    try:
        con = connect(paths.warehouse, read_only=True)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        raise WarehouseBusyError(
            f"{paths.warehouse} is open for writing by another process (a Dagster job or an "
            f"`upi-risk` command): open it again once that has finished ({exc})"
        ) from exc
    try:
        configured = _settings(paths.root).token_key
        key = load_token_key(paths, configured.get_secret_value() if configured else None)
        register_token_macro(con, key)
        # Devices are tokenized with the same key under their own prefix, so a device token is
        # never mistaken for a person's.
        con.execute(
            "CREATE OR REPLACE TEMP MACRO device_token(v) AS "
            f"'{DEVICE_TOKEN_PREFIX}' || substr(vpa_token(v), {len(TOKEN_PREFIX) + 1})"
        )
        existing = _existing_tables(con)
        views = [view for view in VIEWS if view.source in existing]
        for view in views:
            con.execute(f"CREATE OR REPLACE TEMP VIEW {view.name} AS {view.select}")
    except BaseException:
        con.close()
        raise
    return Warehouse(con, paths, key, views)


class Warehouse:
    """A read-only warehouse connection for analysis; results come back as Polars frames."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        data_dir: DataDir,
        key: bytes,
        views: Sequence[AnalystView],
    ) -> None:
        self._con = con
        self._key = key
        self._views = {view.name: view for view in views}
        self.data_dir = data_dir
        self.path = data_dir.warehouse

    # --- queries ---------------------------------------------------------------------------

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pl.DataFrame:
        """The result of `query` (with `?` or `$name` parameters), refused if it holds raw VPAs."""
        relation = self._connection().sql(query, params=params)
        if relation is None:  # a statement with no result, e.g. CREATE TEMP TABLE
            return pl.DataFrame()
        frame = relation.pl()
        assert_no_raw_vpas(frame)
        return frame

    def table(self, name: str) -> pl.DataFrame:
        """All rows of a view or mart listed by `tables()`, e.g. "transfers", "adoption.daily_active"."""
        return self.sql(f"SELECT * FROM {self._qualified(name)}")

    def has(self, name: str) -> bool:
        """Whether `tables()` lists `name` (a notebook checks before it reads an optional table)."""
        try:
            self._qualified(name)
        except MissingTableError:
            return False
        return True

    def tables(self) -> pl.DataFrame:
        """What analysts can read here: `name`, `rows` and a one-line `meaning`."""
        rows = []
        for view in self._views.values():
            rows.append((view.name, self._count(view.source), view.meaning))
        comments = dict(
            self._connection()
            .sql(
                "SELECT table_name, comment FROM duckdb_tables() "
                "WHERE NOT temporary AND schema_name = ? ORDER BY table_name",
                params=[SCHEMA],
            )
            .fetchall()
        )
        documented = _mart_meanings()
        for mart, comment in comments.items():
            meaning = documented.get(mart) or comment or ""
            name = f"{SCHEMA}.{mart}"
            rows.append((name, self._count(name), meaning))
        return pl.DataFrame(
            rows, schema={"name": pl.String, "rows": pl.Int64, "meaning": pl.String}, orient="row"
        )

    def describe(self, name: str) -> pl.DataFrame:
        """The columns of a listed table: `column`, `type`."""
        frame = self._connection().sql(f"DESCRIBE {self._qualified(name)}").pl()
        return frame.select(column="column_name", type="column_type")

    def token(self, vpa: str) -> str:
        """The token of one VPA, e.g. to find a customer a support ticket names."""
        return vpa_token(vpa, self._key)

    def live_model(self) -> dict[str, Any] | None:
        """The live model and the policy it scores under (hold threshold), or None if none."""
        # Imported here: the policy pulls in the model registry, seconds of import time that
        # only the model notebook needs.
        from pipelines.decisions.policy import live_policy
        from pipelines.risk.registry import ModelRegistry

        registry = ModelRegistry(self.data_dir.models)
        live = registry.live_version()
        if live is None:
            return None
        manifest = registry.manifest(live)
        policy = live_policy(registry)
        metrics = manifest.get("metrics", {})
        return {
            "version": live,
            "kind": manifest.get("kind"),
            "created_at": manifest.get("created_at"),
            "policy_version": policy.version,
            "hold_threshold": policy.hold_threshold,
            "block_threshold": policy.block_threshold,
            "review_capacity": policy.review_capacity,
            "target_hold_rate": metrics.get("hold_rate"),
            "training_window": manifest.get("training_window"),
            "test_window": manifest.get("test_window"),
            "label_policy": manifest.get("label_policy", {}),
            "metrics": {
                k: v
                for k, v in metrics.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            },
        }

    # --- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Release the file (writers wait for readers to close)."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._con is None else "open, read-only"
        return f"<Warehouse {self.path} ({state}): {', '.join(self._views) or 'no views'}>"

    # --- internals -------------------------------------------------------------------------

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise RuntimeError(f"the warehouse {self.path} is closed: open_warehouse() again")
        return self._con

    def _qualified(self, name: str) -> str:
        if name in self._views:
            return name
        schema, _, mart = name.rpartition(".")
        if schema in ("", SCHEMA) and mart in _existing_marts(self._connection()):
            return f"{SCHEMA}.{mart}"
        known = [view.name for view in VIEWS]
        if name in known:
            source = next(view.source for view in VIEWS if view.name == name)
            why = f"its source {source} has not been built in this warehouse yet"
        elif schema == SCHEMA or mart in _mart_meanings():
            why = (
                f"the adoption mart {SCHEMA}.{mart} has not been built in this warehouse "
                "yet (the adoption assets write it)"
            )
        else:
            why = "it is not one of the analyst views or adoption marts"
        available = ", ".join(self.tables()["name"].to_list()) or "none"
        raise MissingTableError(f"no table {name!r} in {self.path}: {why}; available: {available}")

    def _count(self, qualified: str) -> int:
        return int(self._connection().sql(f"SELECT count(*) FROM {qualified}").fetchall()[0][0])


def assert_no_raw_vpas(frame: pl.DataFrame) -> None:
    """Raise `RawVpaError` if any string value of `frame` looks like a VPA (`local@handle`)."""
    found = {s.name: n for s in frame.iter_columns() if (n := _vpa_like(s))}
    if not found:
        return
    columns = ", ".join(f"{name!r} ({n:,} values)" for name, n in found.items())
    raise RawVpaError(
        f"the result holds raw VPAs (local@handle) in {columns}; notebooks see people only as "
        "keyed tokens: query the views `transfers` (payer_token, payee_token), `accounts` / "
        "`account_events` (user_token) or the adoption marts instead of ledger.* tables, or "
        "tokenize in SQL with vpa_token(column)"
    )


def _vpa_like(series: pl.Series) -> int:
    """How many values of `series` (strings, also inside lists and structs) look like VPAs."""
    dtype = series.dtype
    if dtype == pl.String:
        values = series.drop_nulls()
        # The literal '@' test is far cheaper than the regex and rules out most columns.
        candidates = values.filter(values.str.contains("@", literal=True))
        return int(candidates.str.contains(VPA_LIKE_PATTERN).sum()) if candidates.len() else 0
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return _vpa_like(series.cast(pl.String))
    if isinstance(dtype, pl.List):
        return _vpa_like(series.explode())
    if isinstance(dtype, pl.Array):
        return _vpa_like(series.arr.explode())
    if isinstance(dtype, pl.Struct):
        return sum(_vpa_like(field) for field in series.struct.unnest().iter_columns())
    return 0


def _mart_meanings() -> dict[str, str]:
    """The one-line meaning of each adoption mart: its builder's docstring, defined once there."""
    return {name: mart.description.split("\n")[0] for name, mart in MARTS.items()}


def _settings(data_dir: str | Path | None) -> Settings:
    return Settings() if data_dir is None else Settings(data_dir=Path(data_dir))


def _resolve_data_dir(data_dir: str | Path | None) -> DataDir:
    settings = _settings(data_dir)
    if "data_dir" in settings.model_fields_set:  # given, or set in the environment
        return settings.paths
    here = settings.paths
    if here.warehouse.is_file():
        return here
    # Jupyter starts kernels in the notebook's folder: fall back to the project's data/.
    project = DataDir.resolve(Path(__file__).resolve().parents[1] / DEFAULT_DATA_DIR)
    return project if project.warehouse.is_file() else here


def _existing_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.sql(
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE NOT temporary"
    ).fetchall()
    return {row[0] for row in rows}


def _existing_marts(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.sql(
        "SELECT table_name FROM duckdb_tables() WHERE NOT temporary AND schema_name = ?",
        params=[SCHEMA],
    ).fetchall()
    return {row[0] for row in rows}
