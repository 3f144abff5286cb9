"""The service's requests and responses: ledger-v1 fields, checked with the contract's own
patterns, enums and plausible times (`pipelines.ledger.contract`).

Requests are parsed from raw bytes by pydantic's JSON parser (`model_validate_json`), so a body
that is not JSON, a missing field and a wrong type all come back the same way: a 422 listing
`[{field, message}]` (`pipelines.decisions.record.validation_errors`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from pipelines.decisions.record import iso_utc
from pipelines.ledger import contract as c

TransferId = Annotated[str, StringConstraints(pattern=c.TRANSFER_ID_PATTERN)]
Vpa = Annotated[str, StringConstraints(pattern=c.VPA_PATTERN)]
# Upper bounds the contract leaves open, so that one request cannot grow the state without end.
_DEVICE_ID_MAX = 256
_FRAUD_TYPE_MAX = 64
INT64_MAX = 2**63 - 1
MAX_BATCH_ITEMS = 10_000


def plausible_time(value: datetime, field: str, now: datetime | None = None) -> datetime:
    """`value` in UTC if the contract finds it plausible: not before UPI's launch, not more than
    the clock skew ahead of now; else a ValueError saying which bound it breaks."""
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        # An offset that carries the time past year 1 or 9999 in UTC (e.g. 0001-01-01T00:00+00:01).
        raise ValueError(
            f"{field} {value.isoformat()} is outside the years 1 to 9999 in UTC"
        ) from None
    now = now or datetime.now(UTC)
    if value < c.EARLIEST_TIME:
        raise ValueError(
            f"{field} {iso_utc(value)} is before UPI's launch ({c.EARLIEST_TIME:%Y-%m-%d})"
        )
    if value > now + c.MAX_CLOCK_SKEW:
        raise ValueError(
            f"{field} {iso_utc(value)} is more than {c.MAX_CLOCK_SKEW.days} day ahead of now"
        )
    return value


class _Request(BaseModel):
    # Unknown fields are ignored, not refused: the contract may grow new optional fields.
    model_config = ConfigDict(frozen=True, extra="ignore")


class TransferRequest(_Request):
    """One transfer about to be submitted (ledger-v1 transfer fields). `status`,
    `response_code` and `ledger_seq` may be absent; without `created_at`, the transfer is
    taken as created when the request arrived."""

    transfer_id: TransferId
    created_at: AwareDatetime | None = None
    payer_vpa: Vpa
    payee_vpa: Vpa
    payee_type: Literal[c.PAYEE_TYPES]
    mcc: Annotated[str, StringConstraints(pattern=c.MCC_PATTERN)]
    # Over-limit amounts are accepted: the policy's hard rule blocks them.
    amount_paise: StrictInt = Field(gt=0, le=INT64_MAX)
    currency: Literal[c.CURRENCIES]
    channel: Literal[c.CHANNELS]
    payer_device_id: str = Field(min_length=1, max_length=_DEVICE_ID_MAX)
    payer_state: Annotated[str, StringConstraints(pattern=c.STATE_PATTERN)] | None = None
    status: Literal[c.TRANSFER_STATUSES] | None = None
    response_code: Annotated[str, StringConstraints(pattern=c.RESPONSE_CODE_PATTERN)] | None = None
    note: str | None = Field(None, max_length=50)
    ledger_seq: StrictInt | None = Field(None, ge=0, le=INT64_MAX)

    @field_validator("created_at")
    @classmethod
    def _plausible(cls, value: datetime | None) -> datetime | None:
        return None if value is None else plausible_time(value, "created_at")

    @field_validator("mcc")
    @classmethod
    def _person_mcc(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("payee_type") == "PERSON" and value != c.PERSON_MCC:
            raise ValueError(f"expected {c.PERSON_MCC} for a PERSON payee, got {value}")
        return value

    @field_validator("channel")
    @classmethod
    def _collect_from_merchants(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("payee_type") == "PERSON" and value == "COLLECT":
            raise ValueError("COLLECT is for merchant payees only")
        return value

    def canonical(self) -> bytes:
        """The request as given, in one canonical JSON form (sorted keys, UTC times with
        microseconds): equal requests give equal bytes, whatever their spacing or offsets."""
        return orjson.dumps(self.canonical_dict(), option=orjson.OPT_SORT_KEYS)

    def canonical_dict(self) -> dict[str, Any]:
        out = self.model_dump()
        if self.created_at is not None:
            out["created_at"] = self.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return out

    def fingerprint(self) -> str:
        """sha256 of the canonical request: a repeat has the same, a different transfer under
        the same id does not."""
        return hashlib.sha256(self.canonical()).hexdigest()

    def transfer(self, arrived_at: datetime) -> dict[str, Any]:
        """The transfer as the feature state takes it: created_at filled in, status PENDING if
        absent (it has no outcome yet)."""
        out = self.model_dump()
        out["created_at"] = self.created_at or arrived_at
        out["status"] = self.status or "PENDING"
        return out


class OutcomeRequest(_Request):
    """The outcome of a decided transfer, as the transfer service learns it."""

    status: Literal[c.TRANSFER_STATUSES]
    response_code: Annotated[str, StringConstraints(pattern=c.RESPONSE_CODE_PATTERN)] | None = None


class AccountEventRequest(_Request):
    """One account lifecycle event (ledger-v1 accounts fields; event_id and ledger_seq may be
    absent)."""

    vpa: Vpa
    event_type: Literal[c.ACCOUNT_EVENT_TYPES]
    event_time: AwareDatetime
    event_id: str | None = Field(None, min_length=1, max_length=_DEVICE_ID_MAX)
    device_id: str | None = Field(None, max_length=_DEVICE_ID_MAX)
    state: Annotated[str, StringConstraints(pattern=c.STATE_PATTERN)] | None = None
    ledger_seq: StrictInt | None = Field(None, ge=0, le=INT64_MAX)

    @field_validator("event_time")
    @classmethod
    def _plausible(cls, value: datetime) -> datetime:
        return plausible_time(value, "event_time")


class LabelRequest(_Request):
    """One fraud outcome (ledger-v1 labels fields)."""

    transfer_id: TransferId
    label: Literal[c.LABELS]
    fraud_type: str | None = Field(None, min_length=1, max_length=_FRAUD_TYPE_MAX)
    source: Literal[c.LABEL_SOURCES]
    reported_at: AwareDatetime

    @field_validator("reported_at")
    @classmethod
    def _plausible(cls, value: datetime) -> datetime:
        return plausible_time(value, "reported_at")


class AccountEventBatch(_Request):
    items: list[AccountEventRequest] = Field(max_length=MAX_BATCH_ITEMS)


class LabelBatch(_Request):
    items: list[LabelRequest] = Field(max_length=MAX_BATCH_ITEMS)


class Applied(BaseModel):
    """What a batch of events or labels did."""

    applied: int = Field(description="items the state recorded")
    unknown: int = Field(description="items about a transfer the state does not know")


class FieldError(BaseModel):
    field: str = Field(description="dotted path of the field, or (record) for the whole body")
    message: str


class ErrorBody(BaseModel):
    detail: list[FieldError] | str
