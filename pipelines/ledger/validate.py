"""Row-level contract validation: split a raw batch into typed good rows and rejected rows.

A raw batch is whatever a source produced (columns of any type, some missing, some extra) plus
a `_position` column saying where each row came from. Every rejected row keeps its original
values as JSON and a reason naming each field that is wrong and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from pipelines.ledger import contract as c

POSITION = "_position"

_INTEGER_TYPES = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)
_TEXT_TYPES = (pl.String, pl.Categorical, pl.Enum)
# Offsets (`Z`, `+05:30`) are converted to UTC; a timestamp without one is taken as UTC, as the
# contract says all ledger times are.
_TZ_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z")
_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True)
class ValidatedBatch:
    """Typed rows that meet the contract, and the rejected rows with their reasons."""

    good: pl.DataFrame
    rejected: pl.DataFrame  # columns: _position, reason, record (the original row as JSON)
    missing_columns: tuple[str, ...]
    extra_columns: tuple[str, ...]


def _coerce(column: str, dtype: pl.DataType, source: pl.DataType) -> pl.Expr:
    """An expression casting `column` to the contract type; values that do not fit become null."""
    col = pl.col(column)
    if source == dtype:
        return col
    if isinstance(dtype, pl.Datetime):
        if isinstance(source, pl.Datetime):
            if source.time_zone is None:
                return col.dt.replace_time_zone("UTC").dt.cast_time_unit("us")
            return col.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        if source == pl.String:
            parsed = [col.str.to_datetime(f, time_zone="UTC", strict=False) for f in _TZ_FORMATS]
            parsed += [
                col.str.to_datetime(f, strict=False).dt.replace_time_zone("UTC")
                for f in _NAIVE_FORMATS
            ]
            return pl.coalesce([p.dt.cast_time_unit("us") for p in parsed])
        return pl.lit(None, dtype=dtype)
    if dtype == pl.Int64:
        if isinstance(source, _INTEGER_TYPES) or source == pl.String:
            return col.cast(pl.Int64, strict=False)
        if source in (pl.Float32, pl.Float64) or isinstance(source, pl.Decimal):
            # Money and sequence numbers are exact: 100.0 is accepted, 100.5 is not.
            return pl.when(col == col.round(0)).then(col.cast(pl.Int64, strict=False))
        return pl.lit(None, dtype=dtype)
    if dtype == pl.String:
        if isinstance(source, (*_INTEGER_TYPES, *_TEXT_TYPES)):
            return col.cast(pl.String)
        return pl.lit(None, dtype=dtype)
    return col.cast(dtype, strict=False)


def _as_text(column: str, source: pl.DataType) -> pl.Expr:
    """A raw value as text for a rejection reason (nested values have no plain text)."""
    if source.is_nested() or source == pl.Binary:
        return pl.lit(f"a {source}")
    return pl.col(column).cast(pl.String, strict=False).fill_null("a value of another type")


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decode_text(raw: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Binary columns as text; returns the names whose bytes were not all valid UTF-8, each
    with an `__invalid_utf8_<name>` flag column (the text keeps U+FFFD there, for the record)."""
    invalid: list[str] = []
    for name, dtype in raw.schema.items():
        if dtype != pl.Binary:
            continue
        try:  # all valid, the usual case: one vectorized cast
            raw = raw.with_columns(raw[name].cast(pl.String))
            continue
        except pl.exceptions.PolarsError:
            pass
        values = raw[name].to_list()
        flags = [value is not None and not _is_utf8(value) for value in values]
        text = [None if v is None else v.decode("utf-8", errors="replace") for v in values]
        invalid.append(name)
        raw = raw.with_columns(
            pl.Series(name, text, pl.String),
            pl.Series(f"__invalid_utf8_{name}", flags, pl.Boolean),
        )
    return raw, invalid


def _value_checks(stream: c.Stream) -> list[tuple[pl.Expr, pl.Expr | str]]:
    """(failing condition, reason) pairs on typed columns, for values present in the row."""
    checks: list[tuple[pl.Expr, pl.Expr | str]] = []

    def got(column: str, expected: str) -> pl.Expr:
        return pl.lit(f"{column}: expected {expected}, got ") + pl.col(column).str.slice(0, 40)

    def pattern(column: str, regex: str, expected: str) -> None:
        checks.append(
            (
                pl.col(column).is_not_null() & ~pl.col(column).str.contains(regex),
                got(column, expected),
            )
        )

    def enum(column: str, allowed: tuple[str, ...]) -> None:
        checks.append(
            (
                pl.col(column).is_not_null() & ~pl.col(column).is_in(list(allowed)),
                got(column, f"one of {', '.join(allowed)}"),
            )
        )

    if stream.name == "transfers":
        pattern("transfer_id", c.TRANSFER_ID_PATTERN, "1-35 characters [A-Za-z0-9]")
        pattern("payer_vpa", c.VPA_PATTERN, "a VPA local@handle")
        pattern("payee_vpa", c.VPA_PATTERN, "a VPA local@handle")
        enum("payee_type", c.PAYEE_TYPES)
        pattern("mcc", c.MCC_PATTERN, "4 digits")
        enum("currency", c.CURRENCIES)
        enum("channel", c.CHANNELS)
        enum("status", c.TRANSFER_STATUSES)
        pattern("payer_state", c.STATE_PATTERN, "an ISO 3166-2:IN code like IN-MH")
        pattern("response_code", c.RESPONSE_CODE_PATTERN, "an NPCI response code (2-3 chars)")
        amount, payee_type = pl.col("amount_paise"), pl.col("payee_type")
        checks += [
            (amount.is_not_null() & (amount <= 0), "amount_paise: expected > 0"),
            (
                (payee_type == "PERSON") & (amount > c.P2P_LIMIT_PAISE),
                f"amount_paise: over the P2P limit of {c.P2P_LIMIT_PAISE} paise",
            ),
            (
                (payee_type == "MERCHANT") & (amount > c.P2M_LIMIT_PAISE),
                f"amount_paise: over the P2M limit of {c.P2M_LIMIT_PAISE} paise",
            ),
            (
                (payee_type == "PERSON") & (pl.col("mcc") != c.PERSON_MCC),
                f"mcc: expected {c.PERSON_MCC} for a PERSON payee",
            ),
            (
                (payee_type == "PERSON") & (pl.col("channel") == "COLLECT"),
                "channel: COLLECT is for merchant payees only",
            ),
            (
                pl.col("note").is_not_null() & (pl.col("note").str.len_chars() > 50),
                "note: expected at most 50 characters",
            ),
        ]
    elif stream.name == "accounts":
        pattern("vpa", c.VPA_PATTERN, "a VPA local@handle")
        enum("event_type", c.ACCOUNT_EVENT_TYPES)
        pattern("state", c.STATE_PATTERN, "an ISO 3166-2:IN code like IN-MH")
        checks.append(
            (pl.col("event_id").str.len_chars() == 0, "event_id: expected a non-empty string")
        )
    elif stream.name == "labels":
        pattern("transfer_id", c.TRANSFER_ID_PATTERN, "1-35 characters [A-Za-z0-9]")
        enum("label", c.LABELS)
        enum("source", c.LABEL_SOURCES)
    return checks


def _time_checks(stream: c.Stream, now: datetime) -> list[tuple[pl.Expr, pl.Expr | str]]:
    """Times outside the contract's plausible range: before UPI existed, or further ahead of
    the ingestion time than a clock skew."""
    latest = now + c.MAX_CLOCK_SKEW
    checks: list[tuple[pl.Expr, pl.Expr | str]] = []
    for name in stream.time_columns:
        value = pl.col(name)
        shown = value.dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        checks += [
            (
                value < c.EARLIEST_TIME,
                pl.lit(
                    f"{name}: expected not before UPI's launch ({c.EARLIEST_TIME:%Y-%m-%d}), got "
                )
                + shown,
            ),
            (
                value > latest,
                pl.lit(
                    f"{name}: expected at most {c.MAX_CLOCK_SKEW.days} day after ingestion, got "
                )
                + shown
                + pl.lit(f" (ingested at {now:%Y-%m-%dT%H:%M:%SZ})"),
            ),
        ]
    return checks


def _raw(name: str) -> str:
    return f"__raw_{name}"


def validate_batch(
    stream: c.Stream, raw: pl.DataFrame, *, now: datetime | None = None
) -> ValidatedBatch:
    """Split `raw` (with a `_position` column) into contract-typed good rows and rejected rows.

    `now` is when the batch is ingested: a time more than the contract's clock skew after it
    is implausible (default: the current time).
    """
    if POSITION not in raw.columns:
        raise ValueError(f"raw batch for {stream.name} has no {POSITION} column")
    raw, invalid_utf8 = _decode_text(raw)
    flags = [f"__invalid_utf8_{name}" for name in invalid_utf8]
    present = set(raw.columns) - {POSITION} - set(flags)
    missing = tuple(f.name for f in stream.fields if f.name not in present)
    extra = tuple(sorted(present - set(stream.columns)))

    # Raw values stay beside the typed ones so a rejected row can say what it held.
    frame = raw.rename({name: _raw(name) for name in present})
    typed: list[pl.Expr] = []
    checks: list[tuple[pl.Expr, pl.Expr | str]] = []
    for field in stream.fields:
        if field.name not in present:
            typed.append(pl.lit(None, dtype=field.dtype).alias(field.name))
            if field.required:
                checks.append((pl.lit(True), f"{field.name}: required column is missing"))
            continue
        source = pl.col(_raw(field.name))
        value = _coerce(_raw(field.name), field.dtype, raw.schema[field.name])
        if field.name in invalid_utf8:
            flag = pl.col(f"__invalid_utf8_{field.name}")
            value = pl.when(flag).then(None).otherwise(value)
            checks.append((flag, f"{field.name}: text is not valid UTF-8"))
        typed.append(value.alias(field.name))
        type_name = "timestamp" if isinstance(field.dtype, pl.Datetime) else field.dtype
        wrong_type = source.is_not_null() & pl.col(field.name).is_null()
        if field.name in invalid_utf8:
            wrong_type = wrong_type & ~pl.col(f"__invalid_utf8_{field.name}")
        checks.append(
            (
                wrong_type,
                pl.lit(f"{field.name}: expected {type_name}, got ")
                + _as_text(_raw(field.name), raw.schema[field.name]),
            )
        )
        if field.required:
            checks.append((source.is_null(), f"{field.name}: required, got null"))
    checks += _value_checks(stream)
    checks += _time_checks(stream, now or datetime.now(UTC))

    frame = frame.with_columns(typed)
    # Most batches are clean: find the bad rows with cheap boolean tests, and build reason
    # strings and JSON records for those rows only.
    flagged = frame.with_columns(pl.any_horizontal([cond for cond, _ in checks]).alias("_bad"))
    good = flagged.filter(~pl.col("_bad")).select(*stream.columns, POSITION)
    bad = flagged.filter(pl.col("_bad"))
    reasons = [
        pl.when(cond).then(pl.lit(reason) if isinstance(reason, str) else reason)
        for cond, reason in checks
    ]
    record = pl.struct(
        [pl.col(_raw(name)).alias(name) for name in sorted(present, key=raw.columns.index)]
    ).struct.json_encode()
    rejected = bad.select(
        pl.col(POSITION),
        pl.concat_list(reasons)
        .list.drop_nulls()
        .list.join("; ")
        .str.slice(0, 2000)
        .alias("reason"),
        record.alias("record"),
    )
    return ValidatedBatch(
        good=good, rejected=rejected, missing_columns=missing, extra_columns=extra
    )


def reason_kind(reason: pl.Expr) -> pl.Expr:
    """The kind of a rejection reason without its values, to count reasons by kind."""
    first = reason.str.split("; ").list.first().str.split(", got ").list.first()
    return (
        pl.when(first.str.starts_with("conflict:"))
        .then(pl.lit("conflict: same key, different content"))
        .when(first.str.starts_with("malformed JSON"))
        .then(pl.lit("malformed JSON"))
        .otherwise(first)
    )
