"""Decisions contract v1 (`shared/contracts/decisions-v1.md`) as code: the decision record.

Everything that writes, stores, sends or receives a decision (policy, outbox, delivery, the
reference transfer service) validates it with `DecisionRecord` and names it with `decision_id`.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipelines.ledger.contract import TRANSFER_ID_PATTERN

CONTRACT_VERSION = "decisions-v1"
DECISIONS = ("ALLOW", "HOLD", "BLOCK")
REVIEW_OUTCOMES = ("ALLOW", "BLOCK")
ENDPOINT = "/v1/risk-decisions"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REASON_CODE_PATTERN = r"^[A-Z][A-Z0-9_]{1,63}$"
DECISION_ID_MAX = 64


class DecisionRecord(BaseModel):
    """One decision about one transfer, exactly as it is sent to the transfer service."""

    # Unknown fields are ignored, not refused: the contract may grow new optional fields.
    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    decision_id: str = Field(min_length=1, max_length=DECISION_ID_MAX)
    transfer_id: str = Field(pattern=TRANSFER_ID_PATTERN)
    decision: Literal["ALLOW", "HOLD", "BLOCK"]
    risk_score: float = Field(ge=0.0, le=1.0)
    reason_codes: list[str] = Field(max_length=16)
    model_version: str = Field(min_length=1, max_length=128)
    policy_version: str = Field(min_length=1, max_length=128)
    decided_at: AwareDatetime = Field(strict=False)  # ISO 8601 text in JSON and in storage
    supersedes: str | None = Field(default=None, min_length=1, max_length=DECISION_ID_MAX)

    @field_validator("reason_codes")
    @classmethod
    def _codes_look_like_codes(cls, codes: list[str]) -> list[str]:
        for code in codes:
            if not re.fullmatch(REASON_CODE_PATTERN, code):
                raise ValueError(f"reason code {code!r} is not an UPPER_SNAKE_CASE code")
        return codes

    def to_json_dict(self) -> dict[str, Any]:
        """The record as the JSON object the contract sends (decided_at in UTC, ISO 8601)."""
        out = self.model_dump()
        out["decided_at"] = iso_utc(self.decided_at)
        return out


def iso_utc(moment: datetime) -> str:
    """`moment` in UTC as ISO 8601 with a `Z` suffix; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _digest(*parts: str) -> str:
    # A separator that cannot appear in ids or versions keeps ("a|b","c") apart from ("a","b|c").
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def decision_id(transfer_id: str, model_version: str, policy_version: str) -> str:
    """The id of the scored decision about a transfer: the same inputs always give the same id,
    so re-running scoring with the same model and policy enqueues nothing new."""
    return "dec-" + _digest(CONTRACT_VERSION, transfer_id, model_version, policy_version)


def review_decision_id(hold_decision_id: str, decision: str) -> str:
    """The id of a review outcome (ALLOW or BLOCK) superseding the hold `hold_decision_id`;
    recording the same verdict twice yields the same id."""
    return "rev-" + _digest(CONTRACT_VERSION, "review", hold_decision_id, decision)


def validation_errors(error: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as `[{field, message}]`, the field named by its dotted path."""
    return [
        {
            "field": ".".join(str(p) for p in e["loc"]) or "(record)",
            "message": e["msg"],
        }
        for e in error.errors(include_url=False)
    ]
