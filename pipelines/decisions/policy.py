"""The decision policy: hard rules, then score thresholds, turning scores into ALLOW / HOLD / BLOCK.

A policy is a versioned, frozen value (saved as JSON next to the decisions it made). Hard rules
win over the score, in this order: over the UPI limit -> BLOCK; payee on the block list of
bank-confirmed mule VPAs -> BLOCK; payee or payer->payee pair on the allow list -> ALLOW. Then
score >= block_threshold (if set) -> BLOCK, score >= hold_threshold -> HOLD, else ALLOW. Held and
blocked transfers carry reason codes from `pipelines.risk.reasons`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.decisions.record import DECISIONS
from pipelines.ledger import contract as c
from pipelines.risk import reasons as rc
from pipelines.risk.registry import ModelRegistry
from pipelines.settings import Settings

ALLOW, HOLD, BLOCK = DECISIONS
PAIR_SEPARATOR = "->"  # allow-list entry for a pair: "payer@handle->payee@handle"
DECISION_INPUT_COLUMNS = ["payer_vpa", "payee_vpa", "payee_type", "mcc", "amount_paise"]


class Policy(BaseModel):
    """Thresholds and hard-rule switches in force, under one version string."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(pattern=r"^policy-[0-9A-Za-z._-]+$", examples=["policy-2026.11.1"])
    hold_threshold: float = Field(gt=0.0, le=1.0, description="score at or above -> HOLD")
    block_threshold: float | None = Field(
        default=None, gt=0.0, le=1.0, description="score at or above -> BLOCK (None: never)"
    )
    review_capacity: int = Field(
        default=Settings.model_fields["review_capacity"].default,
        ge=0,
        description="held transfers a day the risk team can review",
    )
    block_over_upi_limit: bool = True
    block_listed_payees: bool = True
    allow_listed: bool = True
    max_reason_codes: int = Field(default=rc.MAX_REASON_CODES, ge=1, le=16)

    @model_validator(mode="after")
    def _block_above_hold(self) -> Policy:
        if self.block_threshold is not None and self.block_threshold < self.hold_threshold:
            raise ValueError(
                f"block_threshold {self.block_threshold} is below hold_threshold "
                f"{self.hold_threshold}: expected block_threshold >= hold_threshold"
            )
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> Policy:
        return cls.model_validate_json(text)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> Policy:
        return cls.from_json(path.read_bytes())


def upi_limit_paise() -> pl.Expr:
    """The UPI per-transfer limit of each row's payee type and MCC (ledger contract)."""
    verified = (pl.col("payee_type") == "MERCHANT") & pl.col("mcc").is_in(
        sorted(c.P2M_HIGH_LIMIT_MCCS)
    )
    return pl.when(verified).then(c.P2M_LIMIT_PAISE).otherwise(c.P2P_LIMIT_PAISE)


def upi_limit_paise_of(payee_type: str, mcc: str | None) -> int:
    """`upi_limit_paise` of one transfer."""
    verified = payee_type == "MERCHANT" and mcc in c.P2M_HIGH_LIMIT_MCCS
    return c.P2M_LIMIT_PAISE if verified else c.P2P_LIMIT_PAISE


def _hard_rule(policy: Policy, blocklist: set[str], allowlist: set[str]) -> pl.Expr:
    """The code of the hard rule that decides a row, or null (first matching rule wins)."""
    rules: list[tuple[pl.Expr, str]] = []
    if policy.block_over_upi_limit:
        rules.append((pl.col("amount_paise") > upi_limit_paise(), rc.OVER_UPI_LIMIT.code))
    if policy.block_listed_payees and blocklist:
        rules.append((pl.col("payee_vpa").is_in(sorted(blocklist)), rc.BLOCKLISTED_PAYEE.code))
    if policy.allow_listed and allowlist:
        payees = sorted(a for a in allowlist if PAIR_SEPARATOR not in a)
        pairs = sorted(a for a in allowlist if PAIR_SEPARATOR in a)
        allowed = pl.col("payee_vpa").is_in(payees)
        if pairs:
            pair = pl.concat_str(pl.col("payer_vpa"), pl.lit(PAIR_SEPARATOR), pl.col("payee_vpa"))
            allowed = allowed | pair.is_in(pairs)
        rules.append((allowed, rc.ALLOWLISTED.code))
    if not rules:
        return pl.lit(None, dtype=pl.String)
    expr = pl.when(rules[0][0].fill_null(False)).then(pl.lit(rules[0][1]))
    for condition, code in rules[1:]:
        expr = expr.when(condition.fill_null(False)).then(pl.lit(code))
    return expr.otherwise(pl.lit(None, dtype=pl.String))


def decide(
    frame: pl.DataFrame,
    policy: Policy,
    *,
    blocklist: set[str],
    allowlist: set[str],
    score_column: str = "risk_score",
) -> pl.DataFrame:
    """`frame` (transfer columns, feature columns and a score) with `decision` and
    `reason_codes` added. Allow-list entries are payee VPAs or `payer->payee` pairs."""
    rc.check_columns(
        frame, [*DECISION_INPUT_COLUMNS, score_column, *rc.required_columns()], "decide"
    )
    nulls = frame[score_column].null_count()
    if nulls:
        raise ValueError(f"{score_column} is null in {nulls} rows: every transfer needs a score")
    score = pl.col(score_column)
    rule = _hard_rule(policy, blocklist, allowlist)
    by_score = pl.lit(ALLOW)
    by_score = pl.when(score >= policy.hold_threshold).then(pl.lit(HOLD)).otherwise(by_score)
    if policy.block_threshold is not None:
        by_score = pl.when(score >= policy.block_threshold).then(pl.lit(BLOCK)).otherwise(by_score)
    decision = (
        pl.when(pl.col("_rule") == rc.ALLOWLISTED.code)
        .then(pl.lit(ALLOW))
        .when(pl.col("_rule").is_not_null())
        .then(pl.lit(BLOCK))
        .otherwise(by_score)
    )
    out = frame.with_columns(rule.alias("_rule")).with_columns(decision.alias("decision"))

    # Hard-rule rows carry their rule's code; rows held or blocked by the score carry the
    # feature codes that fire, or HIGH_MODEL_SCORE when none does; allowed rows carry none.
    rule_codes = [rc.OVER_UPI_LIMIT.code, rc.BLOCKLISTED_PAYEE.code, rc.ALLOWLISTED.code]
    mask = rc.reason_mask_expr()
    key = (
        pl.when(pl.col("_rule").is_not_null())
        .then(
            pl.col("_rule").replace_strict(
                rule_codes,
                [rc.single_code_key(code) for code in rule_codes],
                return_dtype=pl.UInt64,
            )
        )
        .when(pl.col("decision") == ALLOW)
        .then(pl.lit(0, pl.UInt64))
        .when(mask == 0)
        .then(pl.lit(rc.single_code_key(rc.HIGH_MODEL_SCORE.code), pl.UInt64))
        .otherwise(mask)
    )
    codes = rc.codes_from_keys(out.select(key).to_series(), max_codes=policy.max_reason_codes)
    return out.drop("_rule").with_columns(codes)


def hard_rule_one(
    transfer: Mapping[str, Any], policy: Policy, *, blocklisted: bool, allowlist: set[str]
) -> str | None:
    """The code of the hard rule that decides one transfer, or None: `_hard_rule` for a row.
    `blocklisted` says whether its payee was on the block list in force."""
    if policy.block_over_upi_limit and transfer["amount_paise"] > upi_limit_paise_of(
        transfer["payee_type"], transfer.get("mcc")
    ):
        return rc.OVER_UPI_LIMIT.code
    if policy.block_listed_payees and blocklisted:
        return rc.BLOCKLISTED_PAYEE.code
    if policy.allow_listed and allowlist:
        payee = transfer["payee_vpa"]
        if payee in allowlist or f"{transfer['payer_vpa']}{PAIR_SEPARATOR}{payee}" in allowlist:
            return rc.ALLOWLISTED.code
    return None


def decide_one(
    values: Mapping[str, Any],
    policy: Policy,
    *,
    score: float | None,
    blocklisted: bool,
    allowlist: set[str],
    fallback: str = ALLOW,
) -> tuple[str, list[str]]:
    """(decision, reason codes) of one transfer: `decide` for a row, without a frame.

    `values` holds the transfer's fields (DECISION_INPUT_COLUMNS) and its features. A score of
    None means the model could not score it in time: the hard rules still apply, then
    `fallback` (ALLOW or HOLD) decides, with the reason MODEL_UNAVAILABLE.
    """
    if fallback not in (ALLOW, HOLD):
        raise ValueError(f"fallback {fallback!r}: expected ALLOW or HOLD")
    rule = hard_rule_one(values, policy, blocklisted=blocklisted, allowlist=allowlist)
    if rule is not None:
        return (ALLOW if rule == rc.ALLOWLISTED.code else BLOCK), [rule]
    if score is None:
        return fallback, [rc.MODEL_UNAVAILABLE.code]
    decision = ALLOW
    if score >= policy.hold_threshold:
        decision = HOLD
    if policy.block_threshold is not None and score >= policy.block_threshold:
        decision = BLOCK
    if decision == ALLOW:
        return decision, []
    mask = rc.reason_mask_one(values)
    key = mask if mask else rc.single_code_key(rc.HIGH_MODEL_SCORE.code)
    return decision, rc.codes_of_key(key, max_codes=policy.max_reason_codes)


def confirmed_mule_vpas(
    labels: pl.DataFrame | pl.LazyFrame,
    transfers: pl.DataFrame | pl.LazyFrame,
    as_of: datetime,
) -> set[str]:
    """The block list as it stood at `as_of`: payee VPAs of transfers labelled FRAUD / MULE by
    BANK_CONFIRMED with `reported_at` before `as_of`."""
    if as_of.tzinfo is None:
        raise ValueError(f"as_of {as_of!r} is naive: expected a timezone-aware UTC time")
    mule_transfers = (
        labels.lazy()
        .filter(
            (pl.col("label") == "FRAUD")
            & (pl.col("fraud_type") == "MULE")
            & (pl.col("source") == "BANK_CONFIRMED")
            & (pl.col("reported_at") < pl.lit(as_of).dt.cast_time_unit("us"))
        )
        .select("transfer_id")
        .unique()
    )
    payees = (
        transfers.lazy()
        .select("transfer_id", "payee_vpa")
        .unique()
        .join(mule_transfers, on="transfer_id", how="semi")
        .select("payee_vpa")
        .unique()
        .collect()
    )
    return set(payees["payee_vpa"].to_list())


def live_policy(registry: ModelRegistry) -> Policy:
    """The policy in force: the live model's hold threshold for the target hold rate, raised
    where that would hold more a day than the review team can review (both measured on the
    model's test window), so that holds do not pile up unreviewed."""
    live = registry.live_version()
    if live is None:
        raise LookupError(f"no live model in {registry.root}: train one first")
    return model_policy(registry, live)


def model_policy(registry: ModelRegistry, version: str) -> Policy:
    """The policy a model version decides under while it is live (see `live_policy`): what
    recomputing an old decision needs, since its policy version names the model."""
    metrics = registry.manifest(version)["metrics"]
    threshold = metrics.get("hold_threshold")
    if threshold is None or not np.isfinite(threshold) or threshold > 1:
        # The rate holds no transfer of the test window (too few, or ties at the top score):
        # hold only a certain score, never fall back to an arbitrary threshold.
        threshold = 1.0
    capacity = metrics.get("capacity_threshold")
    if capacity is not None and np.isfinite(capacity):
        threshold = min(max(threshold, capacity), 1.0)
    return Policy(
        version=f"policy-{version}",
        hold_threshold=float(threshold),
        review_capacity=int(
            metrics.get("review_capacity") or Policy.model_fields["review_capacity"].default
        ),
    )


def read_allowlist(path: Path) -> set[str]:
    """Allow-list entries (a payee VPA, or `payer->payee`), one a line; `#` starts a comment."""
    if not path.exists():
        return set()
    entries = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {entry for entry in entries if entry}
