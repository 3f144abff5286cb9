"""Reason codes: why a transfer was held or blocked, in stable documented codes.

Each code is defined once here: its meaning in one line and, for feature codes, the condition
over feature columns (a Polars expression; a null feature is unknown and never fires a code)
and a strength that orders the codes of one transfer, strongest first. Batch scoring, the
online API, the review queue and the docs all read this catalogue.

Amounts in conditions come from the ledger's `amount_paise` (carried next to the features), so
rupee thresholds do not depend on how `amount_log` is scaled.

A condition is written once and evaluated two ways: as a Polars expression over a batch, and on
one row (a mapping) for the online decision path, where building a frame would cost more than
the whole decision. Both follow Polars' null logic (Kleene: a comparison with null is unknown,
`unknown & false` is false, `unknown | true` is true, and unknown never fires a code).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

Kind = Literal["feature", "model", "rule", "review"]
MAX_REASON_CODES = 3

_Value = Callable[[Mapping[str, Any]], Any]


class Term:
    """A number per row: a column, or a column times a constant."""

    def __init__(self, expr: pl.Expr, value: _Value) -> None:
        self.expr = expr
        self.value = value

    def _scaled(self, k: float, op: Callable[[Any, Any], Any]) -> Term:
        value = self.value
        return Term(op(self.expr, k), lambda row: None if (v := value(row)) is None else op(v, k))

    def __mul__(self, k: float) -> Term:
        return self._scaled(k, operator.mul)

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> Term:
        return self._scaled(k, operator.truediv)

    def _compare(self, other: Term | float, op: Callable[[Any, Any], bool]) -> Condition:
        left = self.value
        if isinstance(other, Term):
            right, right_expr = other.value, other.expr
        else:
            right, right_expr = (lambda row, k=other: k), pl.lit(other)

        def value(row: Mapping[str, Any]) -> bool | None:
            a, b = left(row), right(row)
            return None if a is None or b is None else bool(op(a, b))

        return Condition(op(self.expr, right_expr), value)

    def __ge__(self, other: Term | float) -> Condition:  # type: ignore[override]
        return self._compare(other, operator.ge)

    def __lt__(self, other: Term | float) -> Condition:  # type: ignore[override]
        return self._compare(other, operator.lt)

    def __eq__(self, other: Term | float) -> Condition:  # type: ignore[override]
        return self._compare(other, operator.eq)

    __hash__ = None  # type: ignore[assignment]


class Condition:
    """A true / false / unknown (None) per row, as a Polars expression and on one row."""

    def __init__(self, expr: pl.Expr, value: _Value) -> None:
        self.expr = expr
        self.value = value

    def __and__(self, other: Condition) -> Condition:
        a, b = self.value, other.value

        def value(row: Mapping[str, Any]) -> bool | None:
            x, y = a(row), b(row)
            if x is False or y is False:
                return False
            return None if x is None or y is None else True

        return Condition(self.expr & other.expr, value)

    def __or__(self, other: Condition) -> Condition:
        a, b = self.value, other.value

        def value(row: Mapping[str, Any]) -> bool | None:
            x, y = a(row), b(row)
            if x is True or y is True:
                return True
            return None if x is None or y is None else False

        return Condition(self.expr | other.expr, value)

    def fires(self, row: Mapping[str, Any]) -> bool:
        """Whether the condition holds on one row (unknown does not fire)."""
        return self.value(row) is True


def _f(name: str) -> Term:
    """A feature (or ledger) column; None or NaN is null, as in the batch frame."""

    def value(row: Mapping[str, Any]) -> Any:
        v = row.get(name)
        return None if v is None or v != v else v  # v != v: NaN

    return Term(pl.col(name), value)


_RUPEES = _f("amount_paise") / 100


@dataclass(frozen=True)
class ReasonCode:
    """One reason code: what it means and, for a feature code, when it fires."""

    code: str
    meaning: str
    kind: Kind
    condition: Condition | None = None
    strength: float = 0.0


FEATURE_CODES: tuple[ReasonCode, ...] = (
    ReasonCode(
        "PAYEE_REPORTED_RECENTLY",
        "Transfers to the payee were reported as fraud in the last 7 days.",
        "feature",
        _f("payee_fraud_reports_7d") >= 1,
        97,
    ),
    ReasonCode(
        "PAYEE_REPORTED_FRAUD",
        "The payee has received transfers reported as fraud (3+ reports, or 1%+ of its inbound).",
        "feature",
        (_f("payee_fraud_reports") >= 1)
        & ((_f("payee_fraud_reports") >= 3) | (_f("payee_fraud_rate_reported") >= 0.01)),
        95,
    ),
    ReasonCode(
        "PAYEE_PASS_THROUGH",
        "The payee sent on 80%+ of the ₹10,000+ it received in the last 24 h (mule pattern).",
        "feature",
        (_f("payee_passthrough_24h") >= 0.8) & (_f("payee_inbound_amount_24h") >= 10_000),
        90,
    ),
    ReasonCode(
        "DEVICE_REPORTED_FRAUD",
        "Transfers made from the payer's device were reported as fraud in the last 30 days.",
        "feature",
        _f("device_fraud_reports_30d") >= 1,
        88,
    ),
    ReasonCode(
        "REPEATED_FAILED_PIN",
        "The payer entered a wrong UPI PIN 3+ times in the last 24 h.",
        "feature",
        _f("payer_failed_pin_24h") >= 3,
        85,
    ),
    ReasonCode(
        "NEW_DEVICE_HIGH_AMOUNT",
        "₹5,000+ from a device new to the payer or bound less than 24 h ago.",
        "feature",
        ((_f("payer_new_device") == 1) | (_f("payer_hours_since_device_bound") < 24))
        & (_RUPEES >= 5_000),
        80,
    ),
    ReasonCode(
        "RECENT_SIM_CHANGE",
        "The payer's SIM changed less than 72 h ago (SIM-swap takeover risk).",
        "feature",
        _f("payer_hours_since_sim_change") < 72,
        75,
    ),
    ReasonCode(
        "RECENT_PIN_RESET",
        "The payer reset the UPI PIN less than 72 h ago.",
        "feature",
        _f("payer_hours_since_pin_reset") < 72,
        72,
    ),
    ReasonCode(
        "PAYEE_MANY_NEW_PAYERS",
        "A person payee received from 5+ distinct payers in 1 h or 15+ in 24 h.",
        "feature",
        (_f("payee_is_merchant") == 0)
        & ((_f("payee_distinct_payers_1h") >= 5) | (_f("payee_distinct_payers_24h") >= 15)),
        70,
    ),
    ReasonCode(
        "FIRST_TIME_PAYEE_HIGH_AMOUNT",
        "₹10,000+ to a payee the payer has never paid before.",
        "feature",
        (_f("pair_is_first") == 1) & (_RUPEES >= 10_000),
        65,
    ),
    ReasonCode(
        "AMOUNT_FAR_ABOVE_PAYER_HISTORY",
        "₹2,000+ and 10x+ the payer's 30-day median amount (or 4+ standard deviations above).",
        "feature",
        (_RUPEES >= 2_000)
        & ((_f("payer_amount_ratio_median_30d") >= 10) | (_f("payer_amount_zscore_30d") >= 4)),
        60,
    ),
    ReasonCode(
        "AMOUNT_FAR_ABOVE_PAYEE_TICKET",
        "₹2,000+ and 10x+ the payee's usual amount (its 30-day mean received).",
        "feature",
        (_RUPEES >= 2_000) & (_f("payee_amount_ratio_mean_30d") >= 10),
        58,
    ),
    ReasonCode(
        "PAYEE_NEW_ACCOUNT",
        "The payee's account is less than 72 h old.",
        "feature",
        _f("payee_account_age_hours") < 72,
        55,
    ),
    ReasonCode(
        "COLLECT_FROM_NEW_MERCHANT",
        "A collect request from a merchant whose account is less than 30 days old.",
        "feature",
        (_f("channel_collect") == 1)
        & (_f("payee_is_merchant") == 1)
        & (_f("payee_account_age_hours") < 30 * 24),
        52,
    ),
    ReasonCode(
        "PAYER_VELOCITY_SPIKE",
        "The payer made 8+ transfers in 1 h, or 15+ in 24 h at 5x+ their 30-day daily rate.",
        "feature",
        (_f("payer_count_1h") >= 8)
        | (
            (_f("payer_count_24h") >= 15)
            & (_f("payer_count_24h") * 30 >= 5 * _f("payer_count_30d"))
        ),
        50,
    ),
    ReasonCode(
        "PAYER_MANY_NEW_PAYEES",
        "The payer paid 5+ distinct payees in 24 h, 80%+ of them new to the payer.",
        "feature",
        (_f("payer_distinct_payees_24h") >= 5) & (_f("payer_new_payee_share_24h") >= 0.8),
        45,
    ),
    ReasonCode(
        "PAYEE_VOLUME_SPIKE",
        "The payee's inbound volume is 5x+ its usual level.",
        "feature",
        _f("payee_volume_spike") >= 5,
        40,
    ),
    ReasonCode(
        "NIGHT_ACTIVITY",
        "Sent at night (IST) by a payer who rarely transacts at night (under 5% of 30 days).",
        "feature",
        (_f("is_night_ist") == 1) & (_f("payer_night_share_30d") < 0.05),
        20,
    ),
)

HIGH_MODEL_SCORE = ReasonCode(
    "HIGH_MODEL_SCORE",
    "The model's risk score is high but no single rule above explains it.",
    "model",
)
MODEL_UNAVAILABLE = ReasonCode(
    "MODEL_UNAVAILABLE",
    "The online decision could not be scored in time (state, features or model failed or ran "
    "late); the documented fallback decided it, after the hard rules.",
    "model",
)
OVER_UPI_LIMIT = ReasonCode(
    "OVER_UPI_LIMIT",
    "Over the UPI per-transfer limit for the payee type and merchant category (hard rule).",
    "rule",
)
BLOCKLISTED_PAYEE = ReasonCode(
    "BLOCKLISTED_PAYEE",
    "The payee is a bank-confirmed mule account on the block list (hard rule).",
    "rule",
)
ALLOWLISTED = ReasonCode(
    "ALLOWLISTED",
    "The payee, or this payer-payee pair, is on the allow list (hard rule).",
    "rule",
)
REVIEW_RELEASED = ReasonCode(
    "REVIEW_RELEASED",
    "A reviewer released the held transfer as legitimate.",
    "review",
)
REVIEW_CONFIRMED_FRAUD = ReasonCode(
    "REVIEW_CONFIRMED_FRAUD",
    "A reviewer confirmed the held transfer as fraud.",
    "review",
)

CATALOGUE: dict[str, ReasonCode] = {
    rc.code: rc
    for rc in (
        *FEATURE_CODES,
        HIGH_MODEL_SCORE,
        MODEL_UNAVAILABLE,
        OVER_UPI_LIMIT,
        BLOCKLISTED_PAYEE,
        ALLOWLISTED,
        REVIEW_RELEASED,
        REVIEW_CONFIRMED_FRAUD,
    )
}
# Strongest first; ties keep catalogue order, so the order of codes is stable.
_BY_STRENGTH = sorted(FEATURE_CODES, key=lambda rc: -rc.strength)


def required_columns() -> list[str]:
    """The columns the feature conditions read."""
    names: set[str] = set()
    for rc in FEATURE_CODES:
        assert rc.condition is not None
        names.update(rc.condition.expr.meta.root_names())
    return sorted(names)


# Which codes fire on a row is a bitmask (bit i = i-th strongest code): a few comparisons per
# row, after which only the distinct masks of a batch (a handful) are turned into lists of codes.
# Keys above the feature bits stand for one whole list: the model fallback and the hard rules.
_SINGLE_CODE_KEYS = {
    1 << (62 - i): rc.code
    for i, rc in enumerate(rc for rc in CATALOGUE.values() if rc.kind != "feature")
}
_KEY_OF_CODE = {code: key for key, code in _SINGLE_CODE_KEYS.items()}
assert len(_BY_STRENGTH) <= 62 - len(_SINGLE_CODE_KEYS), "too many codes for a 64-bit mask"


def reason_mask_expr() -> pl.Expr:
    """A UInt64 bitmask per row of the feature codes that fire (bit i: i-th strongest code)."""
    return pl.sum_horizontal(
        [
            pl.when(rc.condition.expr)
            .then(pl.lit(1 << i, pl.UInt64))
            .otherwise(pl.lit(0, pl.UInt64))
            for i, rc in enumerate(_BY_STRENGTH)
        ]
    ).alias("reason_mask")


def reason_mask_one(row: Mapping[str, Any]) -> int:
    """The bitmask of `reason_mask_expr` for one row given as {column: value}."""
    mask = 0
    for i, rc in enumerate(_BY_STRENGTH):
        assert rc.condition is not None
        if rc.condition.fires(row):
            mask |= 1 << i
    return mask


def single_code_key(code: str) -> int:
    """The key that `codes_from_keys` turns into exactly `[code]` (rule, model, review codes)."""
    if code not in _KEY_OF_CODE:
        raise ValueError(f"{code!r} is not a rule, model or review code of the catalogue")
    return _KEY_OF_CODE[code]


def codes_of_key(key: int, *, max_codes: int = MAX_REASON_CODES) -> list[str]:
    """The reason codes of one key: a feature mask gives its codes (strongest first, at most
    `max_codes`); a single-code key gives that code; 0 gives an empty list."""
    if key in _SINGLE_CODE_KEYS:
        return [_SINGLE_CODE_KEYS[key]]
    return [rc.code for i, rc in enumerate(_BY_STRENGTH) if key >> i & 1][:max_codes]


def codes_from_keys(keys: pl.Series, *, max_codes: int = MAX_REASON_CODES) -> pl.Series:
    """Reason-code lists for a column of keys (see `codes_of_key`)."""
    distinct = keys.unique().drop_nulls().to_list()
    lists = [codes_of_key(key, max_codes=max_codes) for key in distinct]
    return keys.replace_strict(distinct, lists, default=[], return_dtype=pl.List(pl.String)).alias(
        "reason_codes"
    )


def check_columns(frame: pl.DataFrame | pl.LazyFrame, columns: list[str], what: str) -> None:
    """Raise a ValueError naming the columns `what` needs that `frame` lacks."""
    have = set(frame.collect_schema().names())
    missing = [c for c in columns if c not in have]
    if missing:
        raise ValueError(f"{what} needs columns {missing}, which the frame lacks")


def reason_codes(
    frame: pl.DataFrame,
    *,
    max_codes: int = MAX_REASON_CODES,
    score_column: str = "risk_score",
    high_score: float | None = None,
) -> pl.Series:
    """Per row, the reason codes that fire (a list of up to `max_codes`, strongest first).
    With `high_score`, a row scoring at least that with no code gets `[HIGH_MODEL_SCORE]`."""
    needed = required_columns() + ([score_column] if high_score is not None else [])
    check_columns(frame, needed, "reason_codes")
    key = reason_mask_expr()
    if high_score is not None:
        fallback = (pl.col(score_column) >= high_score).fill_null(False) & (key == 0)
        key = (
            pl.when(fallback)
            .then(pl.lit(single_code_key(HIGH_MODEL_SCORE.code), pl.UInt64))
            .otherwise(key)
        )
    return codes_from_keys(frame.select(key).to_series(), max_codes=max_codes)


def review_reason(decision: str) -> str:
    """The code a review outcome carries: REVIEW_RELEASED for ALLOW, REVIEW_CONFIRMED_FRAUD
    for BLOCK."""
    codes = {"ALLOW": REVIEW_RELEASED.code, "BLOCK": REVIEW_CONFIRMED_FRAUD.code}
    if decision not in codes:
        raise ValueError(f"review outcome {decision!r}: expected ALLOW or BLOCK")
    return codes[decision]


def reason_code_table() -> str:
    """The catalogue as a Markdown table (code, kind, meaning), for the docs."""
    lines = ["| code | kind | meaning |", "|---|---|---|"]
    for kind in ("rule", "feature", "model", "review"):
        group = [rc for rc in CATALOGUE.values() if rc.kind == kind]
        if kind == "feature":
            group = _BY_STRENGTH
        lines += [f"| `{rc.code}` | {rc.kind} | {rc.meaning} |" for rc in group]
    return "\n".join(lines) + "\n"
