"""Live traffic for the demo: the ledger's last hours, paid through the decision service.

A payments app asks the risk service before it submits a payment to the switch. The demo plays
that part with simulated traffic:

1. `hold_back`: right after the simulation, the last hours of every stream (transfers by
   created_at, account events by event_time, labels by reported_at) are moved out of the
   landing files into a live directory, so the first ingestion and training never see them.
2. `pay_live_traffic`: the reference payments flow replays those hours in time order against
   `POST /v1/decisions`, with a client timeout and a fallback of its own (ALLOW, as the
   decision service's default: a payer is waiting). What is allowed settles as simulated
   (its outcome is posted back); what is held stays PENDING for the risk team; what is blocked
   is declined (FAILED, `K1`: declined on remitter risk). Account events and labels are posted
   as they happen, the way bank reports reach the running service. The ledger rows the
   transfer service would have published are then landed, for the next ingestion.

Labels about transfers that were held or blocked still land as simulated: the simulated bank's
reports are about the fraud attempt, whatever the app did with it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl

STREAMS = {"transfers": "created_at", "accounts": "event_time", "labels": "reported_at"}
LIVE_FILE = "live-00000.parquet"  # landing file name of what the live hours produced
_DONE = "paid.json"  # in the live directory, once the hours were paid and landed
_DECLINED_ON_RISK = "K1"  # NPCI: declined on remitter risk


def hold_back(landing: Path, live: Path, hours: float) -> dict[str, Any]:
    """Move the last `hours` of each stream from the landing files into `live`; nothing if
    `live` already holds them. Returns the cut and the rows moved per stream."""
    if (live / "transfers.parquet").exists():
        return {"held_back": False, "reason": f"{live} already holds live traffic"}
    files = sorted((landing / "transfers").rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no transfers landed under {landing}: simulate first")
    newest = pl.scan_parquet(files).select(pl.col("created_at").max()).collect().item()
    cut = newest - timedelta(hours=hours)
    live.mkdir(parents=True, exist_ok=True)
    moved: dict[str, int] = {}
    for stream, time_column in STREAMS.items():
        paths = sorted((landing / stream).rglob("*.parquet"))
        kept_back = [pl.read_parquet(paths[0]).clear()] if paths else []
        for path in paths:
            frame = pl.read_parquet(path)
            late = frame.filter(pl.col(time_column) >= cut)
            if late.is_empty():
                continue
            kept_back.append(late)
            # Written before the first ingestion: no landed file is changed after it was read.
            frame.filter(pl.col(time_column) < cut).write_parquet(path)
        if not kept_back:
            raise FileNotFoundError(f"no {stream} landed under {landing}")
        rows = pl.concat(kept_back)
        rows.write_parquet(live / f"{stream}.parquet")
        moved[stream] = rows.height
    return {"held_back": True, "cut": cut.isoformat(), "hours": hours, "rows": moved}


@dataclass
class LiveReport:
    """What paying the live hours did, as the payments app saw it."""

    transfers: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    model_unavailable: int = 0  # the service's own fallback decided
    client_fallbacks: int = 0  # no answer in time (or an error): the app's fallback decided
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    latency_ms_max: float | None = None
    outcomes_sent: int = 0
    account_events_sent: int = 0
    labels_sent: int = 0
    seconds: float = 0.0
    model_versions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _json_row(row: dict[str, Any], fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    out = {}
    for name, value in row.items():
        if fields is not None and name not in fields:
            continue
        if value is None:
            continue
        out[name] = value.isoformat() if hasattr(value, "isoformat") else value
    return out


def _stream(live: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The live hours in time order, as runs of one kind: ("transfer", rows), ("accounts",
    rows), ("labels", rows). Transfers come as their first (PENDING) row plus their final row."""
    transfers = pl.read_parquet(live / "transfers.parquet").sort("ledger_seq")
    first = transfers.unique("transfer_id", keep="first", maintain_order=True)
    final = transfers.unique("transfer_id", keep="last", maintain_order=True).select(
        "transfer_id",
        final_status="status",
        final_code="response_code",
        final_seq="ledger_seq",
    )
    paid = first.join(final, on="transfer_id", how="left").with_columns(
        at=pl.col("created_at"), kind=pl.lit("transfer")
    )
    events = pl.read_parquet(live / "accounts.parquet").with_columns(
        at=pl.col("event_time"), kind=pl.lit("accounts")
    )
    labels = pl.read_parquet(live / "labels.parquet").with_columns(
        at=pl.col("reported_at"), kind=pl.lit("labels")
    )
    merged = sorted(
        [
            *((r["at"], 1, r) for r in paid.iter_rows(named=True)),
            *((r["at"], 0, r) for r in events.iter_rows(named=True)),
            *((r["at"], 0, r) for r in labels.iter_rows(named=True)),
        ],
        key=lambda item: (item[0], item[1]),
    )
    run: list[dict[str, Any]] = []
    kind = None
    for _, _, row in merged:
        if row["kind"] != kind and run:
            yield kind, run  # type: ignore[misc]
            run = []
        kind = row["kind"]
        run.append(row)
    if run:
        yield kind, run  # type: ignore[misc]


def pay_live_traffic(
    live: Path,
    landing: Path,
    decision_url: str,
    *,
    timeout_s: float = 0.25,
    fallback: str = "ALLOW",
    concurrency: int = 4,
) -> LiveReport:
    """Pay the live hours through `decision_url` (the service's base URL), post outcomes,
    account events and labels as they happen, and land the ledger rows that result."""
    report = LiveReport()
    if (live / _DONE).exists():
        return LiveReport(**json.loads((live / _DONE).read_text()))
    started = time.perf_counter()
    latencies: list[float] = []
    decisions: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    versions: set[str] = set()
    rows_out: list[dict[str, Any]] = []
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=decision_url, limits=limits) as client:

        def pay(row: dict[str, Any]) -> None:
            body = _json_row(row, _REQUEST_FIELDS)
            t0 = time.perf_counter()
            answer: dict[str, Any] | None = None
            try:
                response = client.post("/v1/decisions", json=body, timeout=timeout_s)
                if response.status_code == 200:
                    answer = response.json()
            except httpx.HTTPError:
                answer = None
            elapsed_ms = (time.perf_counter() - t0) * 1000
            decision = answer["decision"] if answer else fallback
            status, code = row["final_status"], row["final_code"]
            if decision == "HOLD" or status == "PENDING":
                status = None  # held (for the risk team), or still pending at the end
            if decision == "BLOCK":
                status, code = "FAILED", _DECLINED_ON_RISK
            if status is not None:
                client.post(
                    f"/v1/transfers/{row['transfer_id']}/outcome",
                    json={"status": status, "response_code": code},
                    timeout=max(timeout_s, 5.0),
                )
            with lock:
                latencies.append(elapsed_ms)
                decisions[decision] += 1
                if answer is None:
                    report.client_fallbacks += 1
                else:
                    versions.add(answer["model_version"])
                    reasons.update(answer["reason_codes"])
                    if "MODEL_UNAVAILABLE" in answer["reason_codes"]:
                        report.model_unavailable += 1
                report.outcomes_sent += status is not None
                pending = {k: row[k] for k in row if k in _LEDGER_COLUMNS}
                rows_out.append(pending)
                if status is not None:
                    # A transfer that had no final row gets a sequence number when landed.
                    seq = row["final_seq"] if row["final_seq"] != row["ledger_seq"] else None
                    rows_out.append(
                        pending | {"ledger_seq": seq, "status": status, "response_code": code}
                    )

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for kind, rows in _stream(live):
                if kind == "transfer":
                    _pay_in_order(pool, pay, rows)
                    report.transfers += len(rows)
                    continue
                path = "/v1/account-events" if kind == "accounts" else "/v1/labels"
                items = [_json_row(r, None) for r in rows]
                for item in items:
                    item.pop("kind", None)
                    item.pop("at", None)
                client.post(path, json={"items": items}, timeout=10.0).raise_for_status()
                if kind == "accounts":
                    report.account_events_sent += len(items)
                else:
                    report.labels_sent += len(items)

    _land(landing, live, rows_out)
    if latencies:
        lat = np.array(latencies)
        report.latency_ms_p50 = round(float(np.percentile(lat, 50)), 2)
        report.latency_ms_p99 = round(float(np.percentile(lat, 99)), 2)
        report.latency_ms_max = round(float(lat.max()), 2)
    report.decisions = dict(decisions)
    report.reasons = dict(reasons.most_common())
    report.model_versions = sorted(versions)
    report.seconds = round(time.perf_counter() - started, 1)
    (live / _DONE).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return report


def _pay_in_order(pool: ThreadPoolExecutor, pay, rows: list[dict[str, Any]]) -> None:
    """Pay `rows` on the pool, but one payer's transfers one after the other, as a payer's app
    does (the next payment starts when the last one is answered and settled). The pool runs
    tasks in the order they were submitted, so a task only ever waits for one already running
    or done: no deadlock."""
    last: dict[str, Future] = {}
    futures = []
    for row in rows:
        before = last.get(row["payer_vpa"])

        def task(row: dict[str, Any] = row, before: Future | None = before) -> None:
            if before is not None:
                before.result()
            pay(row)

        future = pool.submit(task)
        last[row["payer_vpa"]] = future
        futures.append(future)
    for future in futures:
        future.result()


_LEDGER_COLUMNS = (
    "transfer_id",
    "ledger_seq",
    "created_at",
    "payer_vpa",
    "payee_vpa",
    "payee_type",
    "mcc",
    "amount_paise",
    "currency",
    "channel",
    "payer_device_id",
    "payer_state",
    "status",
    "response_code",
    "note",
)


# What the app sends when it asks: the transfer before it has a place in the ledger or an outcome.
_REQUEST_FIELDS = tuple(
    c for c in _LEDGER_COLUMNS if c not in ("ledger_seq", "status", "response_code")
)


def _land(landing: Path, live: Path, transfer_rows: list[dict[str, Any]]) -> None:
    """Land what the live hours produced, one new file per stream and day, as the ledger's
    producer would publish it: the transfers as the app settled them, events and labels as
    they happened."""
    schema = pl.read_parquet_schema(live / "transfers.parquet")
    transfers = pl.DataFrame(transfer_rows, schema={c: schema[c] for c in _LEDGER_COLUMNS})
    # Sequence numbers above every live one (the live hours are the ledger's newest rows).
    unnumbered = transfers["ledger_seq"].is_null()
    top = pl.read_parquet(live / "transfers.parquet")["ledger_seq"].max() or 0
    fresh = pl.Series(np.cumsum(unnumbered.to_numpy()) + top, dtype=pl.Int64)
    transfers = transfers.with_columns(
        ledger_seq=pl.when(unnumbered).then(fresh).otherwise(pl.col("ledger_seq"))
    )
    frames = {
        "transfers": transfers.sort("ledger_seq"),
        "accounts": pl.read_parquet(live / "accounts.parquet"),
        "labels": pl.read_parquet(live / "labels.parquet"),
    }
    for stream, frame in frames.items():
        time_column = STREAMS[stream]
        for (day,), part in frame.group_by(pl.col(time_column).dt.date(), maintain_order=True):
            target = landing / stream / f"date={day}" / LIVE_FILE
            target.parent.mkdir(parents=True, exist_ok=True)
            part.write_parquet(target)
