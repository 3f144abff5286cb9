"""Small hand-made ledgers for tests: valid rows per contract, easy to break one field at a time."""

import datetime as dt
import json
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.ledger import contract as c

T0 = dt.datetime(2026, 3, 2, 6, 30, tzinfo=dt.UTC)


def transfer(i: int, **overrides: Any) -> dict[str, Any]:
    """A valid SUCCESS P2P transfer row number `i`."""
    row = {
        "transfer_id": f"TX{i:08d}",
        "ledger_seq": i,
        "created_at": T0 + dt.timedelta(minutes=i),
        "payer_vpa": f"payer.{i % 7}@waaxis",
        "payee_vpa": f"payee.{i % 5}@wasbi",
        "payee_type": "PERSON",
        "mcc": "0000",
        "amount_paise": 10_000 + i,
        "currency": "INR",
        "channel": "CHAT",
        "payer_device_id": f"dev{i % 7}",
        "payer_state": "IN-KA",
        "status": "SUCCESS",
        "response_code": "00",
        "note": None,
    }
    row.update(overrides)
    return row


def account_event(i: int, **overrides: Any) -> dict[str, Any]:
    """A valid REGISTERED account event number `i`."""
    row = {
        "event_id": f"EV{i:08d}",
        "ledger_seq": i,
        "event_time": T0 - dt.timedelta(days=1) + dt.timedelta(minutes=i),
        "vpa": f"payer.{i}@waaxis",
        "event_type": "REGISTERED",
        "device_id": f"dev{i}",
        "state": "IN-KA",
    }
    row.update(overrides)
    return row


def label(i: int, **overrides: Any) -> dict[str, Any]:
    """A valid FRAUD label about transfer `i`, reported three days after it."""
    row = {
        "transfer_id": f"TX{i:08d}",
        "label": "FRAUD",
        "fraud_type": "SOCIAL_ENGINEERING",
        "source": "VICTIM_REPORT",
        "reported_at": T0 + dt.timedelta(days=3, minutes=i),
    }
    row.update(overrides)
    return row


def frame(stream: c.Stream, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows as a frame with the contract's types."""
    return pl.DataFrame(rows, schema=stream.schema, orient="row")


def land_parquet(landing: Path, stream: c.Stream, name: str, rows: list[dict[str, Any]]) -> Path:
    """Write rows as a Parquet landing file of `stream`."""
    path = landing / stream.name / name
    path.parent.mkdir(parents=True, exist_ok=True)
    frame(stream, rows).write_parquet(path)
    return path


def land_lines(landing: Path, stream: c.Stream, name: str, lines: list[str]) -> Path:
    """Write raw NDJSON lines (valid or not) as a landing file of `stream`."""
    path = landing / stream.name / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def json_line(row: dict[str, Any]) -> str:
    """One NDJSON line for a row, timestamps as ISO 8601."""
    return json.dumps(
        {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}
    )


# A valid decisions-v1 record, as the transfer service receives it.
DECISION_RECORD = {
    "decision_id": "dec-1",
    "transfer_id": "TX00000001",
    "decision": "HOLD",
    "risk_score": 0.91,
    "reason_codes": ["RECENT_SIM_CHANGE"],
    "model_version": "model-1",
    "policy_version": "policy-2026.11.1",
    "decided_at": "2026-11-02T04:00:00Z",
    "supersedes": None,
}


def load_definitions(settings=None):
    """The project's definitions, loaded with a live Dagster instance in the load context (an
    earlier test's instance, collected by now, may still be the context's current one)."""
    import dagster as dg

    from pipelines.definitions import build_defs
    from pipelines.settings import Settings

    with dg.instance_for_test():
        return build_defs(settings or Settings())
