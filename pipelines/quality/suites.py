"""Great Expectations suites for the ledger streams: the second quality gate after ingestion.

Ingestion quarantines rows that break ledger-v1 one by one; these suites run on the rows a run
loaded (as Dagster asset checks, wired elsewhere) so that a contract breach that still got through
blocks downstream assets. Every column, type, enum, pattern and limit comes from
`pipelines.ledger.contract`.

`import great_expectations` costs 7-13 s and Dagster imports this module in every process, so GX
is imported only inside the functions that validate; the ephemeral context, its pandas data
source and asset are created once per process and reused by every call.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from pipelines.ledger import contract as c

EXAMPLES_LIMIT = 5
# Label rows get the created_at of the transfer they are about under this name before validation.
TRANSFER_CREATED_AT = "transfer_created_at"
# The column whose newest value says how fresh a stream is.
EVENT_TIME_COLUMNS: dict[str, str] = {
    "transfers": "created_at",
    "accounts": "event_time",
    "labels": "reported_at",
}
# P2P collect requests were withdrawn by NPCI from 1 Oct 2025 (contract: "merchants only since
# Oct 2025"); older ledger rows may legitimately carry them.
P2P_COLLECT_CUTOFF = "2025-10-01T00:00:00+00:00"

_POLARS_TO_GX_TYPE: dict[type[pl.DataType], str] = {
    # pandas 3 maps a Polars String to the `str` dtype (StringDtype), whose scalar type is `str`.
    pl.String: "str",
    pl.Int64: "int64",
    # DatetimeTZDtype's scalar type is pd.Timestamp; a tz-naive column is np.datetime64 and fails.
    pl.Datetime: "Timestamp",
}

_UNIQUENESS_KINDS = frozenset({"ExpectColumnValuesToBeUnique", "ExpectCompoundColumnsToBeUnique"})


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation of a suite, described without importing GX."""

    kind: str
    kwargs: tuple[tuple[str, Any], ...]
    blocking: bool
    where: tuple[tuple[str, str, Any], ...] = ()
    tag: str = ""

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the expectation reads, conditions included."""
        kw = dict(self.kwargs)
        cols: list[str] = []
        for key in ("column", "column_A", "column_B"):
            if key in kw:
                cols.append(kw[key])
        cols.extend(kw.get("column_list", ()))
        cols.extend(col for col, _, _ in self.where)
        return tuple(dict.fromkeys(cols))

    @property
    def column(self) -> str | None:
        """The single column the expectation is about, if there is one."""
        return dict(self.kwargs).get("column")

    @property
    def exact(self) -> bool:
        """Whether it must see every row (uniqueness), even when the rest runs on a sample."""
        return self.kind in _UNIQUENESS_KINDS

    @property
    def name(self) -> str:
        """Readable, suite-unique name, e.g. `expect_column_values_to_match_regex(payer_vpa)`."""
        kw = dict(self.kwargs)
        target = [kw[k] for k in ("column", "column_A", "column_B") if k in kw]
        target.extend(kw.get("column_list", ()))
        condition = self.tag or " and ".join(_describe(w) for w in self.where)
        inner = ", ".join(target) + (f" | {condition}" if condition else "")
        return f"{_snake(self.kind)}({inner})"


@dataclass(frozen=True)
class ExpectationOutcome:
    """The result of one expectation: counts, up to 5 failing rows, and whether it blocks."""

    expectation: str  # e.g. "expect_column_values_to_match_regex(payer_vpa)"
    column: str | None
    success: bool
    # Column- or table-level expectations (existence, type, freshness) judge no single row: they
    # count 1 (100 %) when they fail and give the observed value or the error as their example.
    unexpected_count: int
    unexpected_percent: float
    examples: list  # failing rows as {key columns..., judged columns...}, JSON-serialisable
    blocking: bool  # contract-breaking (blocks downstream) rather than a warning


@dataclass(frozen=True)
class SuiteResult:
    """The outcomes of one suite on one stream's rows; `blocked` says whether downstream must stop."""

    stream: str
    suite: str  # "<stream>_contract" or "<stream>_freshness"
    rows_validated: int
    success: bool  # every expectation passed, warnings included
    outcomes: list[ExpectationOutcome]
    rows_total: int | None = None  # rows handed in; more than rows_validated when sampled
    sampled: bool = False

    @property
    def blocked(self) -> bool:
        """True when a contract-breaking (blocking) expectation failed."""
        return any(o.blocking and not o.success for o in self.outcomes)

    def failures(self) -> list[ExpectationOutcome]:
        """Outcomes that failed, blocking or not."""
        return [o for o in self.outcomes if not o.success]

    def outcome(self, expectation: str) -> ExpectationOutcome:
        """The outcome of the expectation with this name, or a KeyError listing the names."""
        for o in self.outcomes:
            if o.expectation == expectation:
                return o
        raise KeyError(
            f"{expectation!r} not in {self.suite}: {[o.expectation for o in self.outcomes]}"
        )

    def metadata(self) -> dict:
        """JSON-serialisable summary for Dagster metadata."""
        failures = self.failures()
        return {
            "stream": self.stream,
            "suite": self.suite,
            "rows": self.rows_total if self.rows_total is not None else self.rows_validated,
            "rows_validated": self.rows_validated,
            "sampled": self.sampled,
            "success": self.success,
            "blocked": self.blocked,
            "evaluated": len(self.outcomes),
            "failed": len(failures),
            "blocking_failed": sum(o.blocking for o in failures),
            "failing": [
                {
                    "expectation": o.expectation,
                    "column": o.column,
                    "blocking": o.blocking,
                    "unexpected_count": o.unexpected_count,
                    "unexpected_percent": round(o.unexpected_percent, 4),
                    "examples": o.examples,
                }
                for o in failures
            ],
        }


# --- suite definitions ---------------------------------------------------------------------


def _frozen(value: Any) -> Any:
    # Specs are cache keys (one GX suite per distinct spec tuple), so they must be hashable.
    return tuple(value) if isinstance(value, list | set | frozenset) else value


def _spec(
    kind: str, *, blocking: bool = True, where=(), tag: str = "", **kwargs
) -> ExpectationSpec:
    frozen = tuple((k, _frozen(v)) for k, v in kwargs.items())
    conditions = tuple((col, op, _frozen(v)) for col, op, v in where)
    return ExpectationSpec(kind, frozen, blocking, conditions, tag)


def _regex(column: str, pattern: str) -> ExpectationSpec:
    return _spec("ExpectColumnValuesToMatchRegex", column=column, regex=pattern)


def _in_set(column: str, values: Iterable[str], **kw) -> ExpectationSpec:
    return _spec("ExpectColumnValuesToBeInSet", column=column, value_set=sorted(values), **kw)


def _common(stream: c.Stream) -> list[ExpectationSpec]:
    specs = [_spec("ExpectColumnToExist", column=f.name) for f in stream.fields]
    specs += [_spec("ExpectColumnValuesToNotBeNull", column=name) for name in stream.required]
    specs += [
        _spec("ExpectColumnValuesToBeOfType", column=f.name, type_=_gx_type(f.dtype))
        for f in stream.fields
    ]
    return specs


def _transfers() -> list[ExpectationSpec]:
    person = ("payee_type", "==", "PERSON")
    merchant = ("payee_type", "==", "MERCHANT")
    return [
        *_common(c.TRANSFERS),
        _regex("transfer_id", c.TRANSFER_ID_PATTERN),
        _regex("payer_vpa", c.VPA_PATTERN),
        _regex("payee_vpa", c.VPA_PATTERN),
        _regex("mcc", c.MCC_PATTERN),
        _regex("payer_state", c.STATE_PATTERN),
        _regex("response_code", c.RESPONSE_CODE_PATTERN),
        _in_set("payee_type", c.PAYEE_TYPES),
        _in_set("currency", c.CURRENCIES),
        _in_set("channel", c.CHANNELS),
        _in_set("status", c.TRANSFER_STATUSES),
        _spec(
            "ExpectColumnValuesToBeBetween",
            column="amount_paise",
            min_value=1,
            max_value=c.P2P_LIMIT_PAISE,
            where=[person],
        ),
        _spec(
            "ExpectColumnValuesToBeBetween",
            column="amount_paise",
            min_value=1,
            max_value=c.P2M_LIMIT_PAISE,
            where=[merchant],
        ),
        # The 5 lakh P2M ceiling applies to verified categories only; others are capped at 1 lakh.
        # The contract does not list every verified category, so this one only warns.
        _spec(
            "ExpectColumnValuesToBeBetween",
            blocking=False,
            column="amount_paise",
            min_value=1,
            max_value=c.P2P_LIMIT_PAISE,
            where=[merchant, ("mcc", "not_in", sorted(c.P2M_HIGH_LIMIT_MCCS))],
            tag="payee_type == MERCHANT and mcc not in P2M_HIGH_LIMIT_MCCS",
        ),
        _in_set("mcc", [c.PERSON_MCC], where=[person]),
        _spec(
            "ExpectColumnValuesToNotBeInSet",
            column="mcc",
            value_set=[c.PERSON_MCC],
            where=[merchant],
        ),
        _spec(
            "ExpectColumnValuesToNotBeInSet",
            blocking=False,
            column="channel",
            value_set=["COLLECT"],
            where=[person, ("created_at", ">=", P2P_COLLECT_CUTOFF)],
        ),
        _spec("ExpectColumnValueLengthsToBeBetween", column="note", min_value=0, max_value=50),
        _spec("ExpectCompoundColumnsToBeUnique", column_list=list(c.TRANSFERS.key)),
        _spec("ExpectColumnValuesToBeUnique", column="ledger_seq"),
    ]


def _accounts() -> list[ExpectationSpec]:
    return [
        *_common(c.ACCOUNTS),
        _regex("vpa", c.VPA_PATTERN),
        _regex("state", c.STATE_PATTERN),
        _in_set("event_type", c.ACCOUNT_EVENT_TYPES),
        _spec("ExpectColumnValuesToBeUnique", column="event_id"),
    ]


def _labels(with_transfer_times: bool) -> list[ExpectationSpec]:
    specs = [
        *_common(c.LABELS_STREAM),
        _regex("transfer_id", c.TRANSFER_ID_PATTERN),
        _in_set("label", c.LABELS),
        _in_set("source", c.LABEL_SOURCES),
        # The contract's list of fraud types is open ("..."): an unknown one is news, not a breach.
        _in_set("fraud_type", c.FRAUD_TYPES, blocking=False),
        _spec("ExpectCompoundColumnsToBeUnique", column_list=list(c.LABELS_STREAM.key)),
    ]
    if with_transfer_times:
        specs += [
            # A label known before its transfer existed would leak the future into training.
            _spec(
                "ExpectColumnPairValuesAToBeGreaterThanB",
                column_A="reported_at",
                column_B=TRANSFER_CREATED_AT,
                or_equal=False,
                ignore_row_if="either_value_is_missing",
            ),
            # The transfer may simply not be loaded yet (labels can come from another source).
            _spec("ExpectColumnValuesToNotBeNull", blocking=False, column=TRANSFER_CREATED_AT),
        ]
    return specs


@functools.cache
def suite_expectations(
    stream: str, *, with_transfer_times: bool = False
) -> tuple[ExpectationSpec, ...]:
    """The contract suite of a stream as specs; cheap, no GX import."""
    name = c.stream(stream).name
    specs = {"transfers": _transfers, "accounts": _accounts}.get(
        name, lambda: _labels(with_transfer_times)
    )()
    names = [s.name for s in specs]
    if len(names) != len(set(names)):
        raise AssertionError(f"duplicate expectation names in {name}: {names}")
    return tuple(specs)


# --- validation ----------------------------------------------------------------------------


def contract_suite_result(
    stream: str,
    frame: pl.DataFrame,
    *,
    transfers_created_at: pl.DataFrame | None = None,
    max_rows: int | None = None,
    seed: int = 0,
) -> SuiteResult:
    """Validate `frame` against the stream's contract suite (labels: against their transfers too)."""
    # The transfers suite takes ~4 s on 1M rows and ~12 s on 3M (2 cores), so every row is
    # checked by default; `max_rows` is for backfills far larger than a run.
    definition = c.stream(stream)
    if transfers_created_at is not None and definition.name != "labels":
        raise ValueError("transfers_created_at only applies to the labels stream")
    with_times = definition.name == "labels" and transfers_created_at is not None
    if with_times:
        frame = _with_transfer_times(frame, transfers_created_at)
    specs = suite_expectations(definition.name, with_transfer_times=with_times)
    key = [k for k in definition.key if k in frame.columns]
    total = frame.height

    if max_rows is None or total <= max_rows:
        outcomes = _validate(specs, frame, key)
        validated = total
    else:
        # Row rules are checked on a sample (ingestion already checked every row once); duplicates
        # cannot be sampled, so uniqueness still sees every key.
        rows = np.sort(np.random.default_rng(seed).choice(total, size=max_rows, replace=False))
        exact = tuple(s for s in specs if s.exact)
        key_columns = list(dict.fromkeys([*key, *(col for s in exact for col in s.columns)]))
        outcomes = _validate(tuple(s for s in specs if not s.exact), frame[rows], key)
        outcomes += _validate(exact, frame.select(key_columns), key)
        order = {s.name: i for i, s in enumerate(specs)}
        outcomes.sort(key=lambda o: order[o.expectation])
        validated = max_rows

    return SuiteResult(
        stream=definition.name,
        suite=f"{definition.name}_contract",
        rows_validated=validated,
        success=all(o.success for o in outcomes),
        outcomes=outcomes,
        rows_total=total,
        sampled=validated < total,
    )


def freshness_result(
    stream: str, frame: pl.DataFrame, *, now: datetime, max_age: timedelta
) -> SuiteResult:
    """Warn (non-blocking) when the newest event time is older than `now - max_age`."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (ledger timestamps are UTC)")
    definition = c.stream(stream)
    column = EVENT_TIME_COLUMNS[definition.name]
    oldest_allowed = (now - max_age).astimezone(UTC)
    spec = _spec(
        "ExpectColumnMaxToBeBetween", blocking=False, column=column, min_value=oldest_allowed
    )
    outcome = _validate((spec,), frame.select(column), [])[0]
    newest = frame.get_column(column).max()
    outcome = replace(
        outcome,
        examples=[]
        if outcome.success
        else [_jsonable({"newest": newest, "oldest_allowed": oldest_allowed})],
    )
    outcomes = [outcome]
    return SuiteResult(
        stream=definition.name,
        suite=f"{definition.name}_freshness",
        rows_validated=frame.height,
        success=all(o.success for o in outcomes),
        outcomes=outcomes,
        rows_total=frame.height,
    )


def _with_transfer_times(labels: pl.DataFrame, transfers: pl.DataFrame) -> pl.DataFrame:
    # Transfers is an event log (one row per state); created_at is the same on every state row.
    created = transfers.group_by("transfer_id").agg(
        pl.col("created_at").min().alias(TRANSFER_CREATED_AT)
    )
    if TRANSFER_CREATED_AT in labels.columns:
        labels = labels.drop(TRANSFER_CREATED_AT)
    return labels.join(created, on="transfer_id", how="left", maintain_order="left")


# GX's context, data source and asset are shared, mutable state; checks may run in threads.
_LOCK = threading.Lock()


@functools.cache
def _gx_runtime():
    """The GX module, and one batch definition on a pandas dataframe asset, made once a process."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # GX md5-fingerprints every pandas batch under 1 GB, twice a validation, only to label the
    # result; that was half the suite's time on 1M rows. Nothing here reads the fingerprint.
    if hasattr(pandas_execution_engine, "HASH_THRESHOLD"):
        pandas_execution_engine.HASH_THRESHOLD = 0

    context = gx.get_context(mode="ephemeral")
    # tqdm bars per validation would flood Dagster's captured stderr.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas("ledger_quality")
    asset = source.add_dataframe_asset("ledger_frame")
    return gx, asset.add_batch_definition_whole_dataframe("whole_frame")


@functools.lru_cache(maxsize=32)
def _gx_suite(specs: tuple[ExpectationSpec, ...]):
    gx, _ = _gx_runtime()
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=f"ledger_{abs(hash(specs)):x}")
    for spec in specs:
        kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.kwargs}
        if spec.where:
            kwargs["row_condition"] = _gx_condition(spec.where)
        meta = {"name": spec.name, "blocking": spec.blocking}
        suite.add_expectation(getattr(gxe, spec.kind)(**kwargs, meta=meta))
    return suite


def _gx_condition(where: Sequence[tuple[str, str, Any]]):
    from great_expectations.expectations.row_conditions import Column

    parts = []
    for column, op, value in where:
        col = Column(column)
        if op == "in":
            parts.append(col.is_in(list(value)))
        elif op == "not_in":
            parts.append(col.is_not_in(list(value)))
        else:
            parts.append(
                {
                    "==": col.__eq__,
                    "!=": col.__ne__,
                    ">=": col.__ge__,
                    ">": col.__gt__,
                    "<=": col.__le__,
                    "<": col.__lt__,
                }[op](value)
            )
    return functools.reduce(lambda a, b: a & b, parts)


def _validate(
    specs: tuple[ExpectationSpec, ...], frame: pl.DataFrame, key: list[str]
) -> list[ExpectationOutcome]:
    if not specs:
        return []
    _, batch_definition = _gx_runtime()
    pdf = frame.to_pandas()
    # GX's pandas engine copies the whole batch frame for every null filter and row condition:
    # one batch per column set, holding only those columns, keeps those copies narrow.
    groups: dict[tuple[str, ...], list[ExpectationSpec]] = {}
    for spec in specs:
        groups.setdefault(tuple(col for col in spec.columns if col in pdf.columns), []).append(spec)
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES_LIMIT}
    outcomes: dict[str, ExpectationOutcome] = {}
    for columns, group in groups.items():
        suite = _gx_suite(tuple(group))
        by_name = {spec.name: spec for spec in group}
        with _LOCK:
            batch = batch_definition.get_batch(batch_parameters={"dataframe": pdf[list(columns)]})
            validation = batch.validate(suite, result_format=result_format)
        for r in validation.results:
            spec = by_name[r.expectation_config.meta["name"]]
            outcomes[spec.name] = _outcome(spec, r, frame, key)
    return [outcomes[spec.name] for spec in specs]


def _outcome(spec: ExpectationSpec, r, frame: pl.DataFrame, key: list[str]) -> ExpectationOutcome:
    result = r.result or {}
    success = bool(r.success)
    if "unexpected_count" in result:
        count = int(result["unexpected_count"] or 0)
        percent = float(result.get("unexpected_percent") or 0.0)
        # The pandas index is the row position in `frame`: show the failing row's key and the
        # values the expectation judged, not GX's bare value list.
        positions = result.get("partial_unexpected_index_list") or []
        shown = [col for col in dict.fromkeys([*key, *spec.columns]) if col in frame.columns]
        examples = [
            _jsonable(frame.select(shown).row(int(i), named=True))
            for i in positions[:EXAMPLES_LIMIT]
        ]
    else:
        count, percent = (0, 0.0) if success else (1, 100.0)
        error = _exception_message(r.exception_info)
        if error is not None:
            examples = [error]
        elif "observed_value" in result and not success:
            examples = [_jsonable(result["observed_value"])]
        else:
            examples = []
    return ExpectationOutcome(
        spec.name, spec.column, success, count, percent, examples, spec.blocking
    )


def _exception_message(info) -> str | None:
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        found = _exception_message(value)
        if found is not None:
            return found
    return None


def _jsonable(value: Any) -> Any:
    """Plain JSON types for GX values (numpy scalars, timestamps, tuples, NaN/NaT -> None)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else str(value)
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return None if math.isnan(value) else value
    import pandas as pd  # already loaded: GX results only exist after a pandas validation

    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _gx_type(dtype: pl.DataType) -> str:
    for polars_type, gx_type in _POLARS_TO_GX_TYPE.items():
        if isinstance(dtype, polars_type):
            return gx_type
    raise TypeError(f"no pandas type check for contract dtype {dtype}")


def _snake(kind: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


def _describe(where: tuple[str, str, Any]) -> str:
    column, op, value = where
    if op in ("in", "not_in"):
        return f"{column} {op.replace('_', ' ')} {list(value)}"
    return f"{column} {op} {value}"
