"""The online feature state: the features of one incoming transfer in time proportional to its
payer's, payee's and device's recent history, equal to the batch engine's.

Layout (`records.py`): one key per VPA ("v:<vpa>": its transfers as payer and as payee, their
outcomes, its account events, fraud reports on its transfers), one per device ("d:<device_id>":
the transfers made from it, their fraud reports), and a set-once index per transfer
("t:<transfer_id>": created_at and parties), through which outcomes and labels, which name only
the transfer, reach the keys of its parties. Every update is an append of records that carry
their own times, in one `store.append` per call, so the answer "as of t" does not depend on
the order updates arrived in; `features` reads its three keys with one `store.read`.

What "the same as the batch" means where the two differ by nature. The batch engine reads the
ledger as it is now; online, a fact counts once its update has been recorded:
- an outcome not yet recorded: a prior transfer whose outcome has not arrived is PENDING
  (attempted, neither succeeded nor failed), so the features equal the batch's computed with
  that transfer PENDING, and differ from the batch on its final status (e.g. a payer's second
  transfer seconds after the first, before the first settled). The switch settles a transfer
  within seconds, so this touches only the next few seconds of its payer's and payee's traffic;
- a label, an account event or a transfer not yet recorded likewise counts from when it is;
- once recorded, everything is dated as in the batch: a fraud by max(created_at, its first
  FRAUD report), an event by event_time, a transfer by created_at; only what is strictly
  before the transfer counts, whatever order the updates came in.

Compaction keeps reads short: when a key read for a transfer at t holds transfers created more
than `COMPACT_AFTER` before t, or more than `FOLD_OUTCOMES_AFTER` outcome records (a busy
payee's), those before t - `KEEP` are folded into summaries and outcomes into their transfers
(`compute.compact`), written with `store.replace` (skipped when another writer appended in
between: the next read tries again). Features of transfers created up to KEEP - 30 days before
the newest transfer a key was compacted for stay exact; live traffic arrives in time order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from pipelines.features.engine.inputs import DAY, EVENT_CODE
from pipelines.features.online import compute
from pipelines.features.online.records import (
    AS_DEVICE,
    AS_PAYEE,
    AS_PAYER,
    DEVICE_USE,
    EVENT,
    FRAUD,
    IN,
    MERCHANT,
    MULE_CONFIRMED,
    OUT,
    OUTCOME,
    device_key,
    index_key,
    night_bit,
    records,
    stable_hash,
    status_bits,
    vpa_key,
)
from pipelines.features.online.store import StateStore

KEEP = 32 * DAY  # history kept as records when a key is compacted: the longest window and 2 days
COMPACT_AFTER = 39 * DAY  # a key is compacted once its oldest transfer is this old: weekly
FOLD_OUTCOMES_AFTER = 256  # a key is compacted once it holds more OUTCOME records than this
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INDEX_SEPARATOR = "\x1f"  # between the fields of an index value: never in a VPA or an id


def micros(moment: datetime) -> int:
    """A datetime as microseconds since the epoch, UTC (naive values are taken as UTC, as the
    batch engine takes them)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class TransferIndex:
    """What the set-once index holds of a transfer: enough to route its outcome and labels."""

    created: int  # microseconds
    payer: str
    payee: str
    device: str

    def encode(self) -> bytes:
        return INDEX_SEPARATOR.join(
            (str(self.created), self.payer, self.payee, self.device)
        ).encode()

    @classmethod
    def decode(cls, value: bytes) -> TransferIndex:
        created, payer, payee, device = value.decode().split(INDEX_SEPARATOR)
        return cls(int(created), payer, payee, device)

    def vpa_keys(self) -> list[str]:
        """The keys of its payer and payee, once each (a VPA may pay itself)."""
        return list(dict.fromkeys((vpa_key(self.payer), vpa_key(self.payee))))


class OnlineFeatureState:
    """Features of incoming transfers, and the updates that keep them current (see module)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.counts: Counter[str] = Counter()

    # --- reads ---------------------------------------------------------------------------

    def features(self, transfer: Mapping[str, Any]) -> dict[str, float | None]:
        """The features (FEATURE_NAMES, in order) of `transfer` as of its created_at, excluding
        itself; None where the batch gives null. `transfer` holds transfer_id, created_at,
        payer_vpa, payee_vpa, payee_type, amount_paise, channel and payer_device_id."""
        t = micros(transfer["created_at"])
        keys = [
            vpa_key(transfer["payer_vpa"]),
            vpa_key(transfer["payee_vpa"]),
            device_key(transfer["payer_device_id"]),
        ]
        raw = self.store.read(keys)
        recs = [compute.decode(data) for data in raw]
        for key, data, held in zip(keys, raw, recs, strict=True):
            self._compact_if_due(key, data, held, t)
        query = compute.Query(
            t=t,
            amount=int(transfer["amount_paise"]),
            payee=stable_hash(transfer["payee_vpa"]),
            device=stable_hash(transfer["payer_device_id"]),
            merchant=transfer["payee_type"] == "MERCHANT",
            channel=transfer["channel"],
        )
        payer, payee, device = (compute.resolve(compute.Columns(r)) for r in recs)
        return compute.features(query, payer, payee, device)

    def payee_blocklisted(self, payee_vpa: str, as_of: datetime) -> bool:
        """Whether a FRAUD label of type MULE from BANK_CONFIRMED on a transfer to the payee was
        reported before `as_of` (the online `policy.confirmed_mule_vpas`)."""
        (data,) = self.store.read([vpa_key(payee_vpa)])
        return compute.blocklisted(compute.decode(data), micros(as_of))

    def has_transfer(self, transfer_id: str) -> bool:
        return self.store.get(index_key(transfer_id)) is not None

    def stats(self) -> dict[str, int]:
        """The store's keys and bytes, and what this process recorded and compacted."""
        return {**self.store.stats(), **self.counts}

    # --- updates -------------------------------------------------------------------------

    def record_transfer(self, transfer: Mapping[str, Any]) -> bool:
        """Record a transfer (PENDING unless it carries status and response_code); False if
        its transfer_id was recorded before (nothing is appended then)."""
        index = TransferIndex(
            created=micros(transfer["created_at"]),
            payer=transfer["payer_vpa"],
            payee=transfer["payee_vpa"],
            device=transfer["payer_device_id"],
        )
        # The index first: a retry after a crash in between loses the transfer's records
        # rather than counting them twice.
        if self.store.set_if_absent(index_key(transfer["transfer_id"]), index.encode()) is not None:
            return False
        flags = (
            status_bits(transfer.get("status"), transfer.get("response_code"))
            | night_bit(index.created)
            | (MERCHANT if transfer["payee_type"] == "MERCHANT" else 0)
        )
        recs = records(3)
        recs["kind"] = (OUT, IN, DEVICE_USE)
        recs["time"] = index.created
        recs["tx"] = stable_hash(transfer["transfer_id"])
        recs["flags"][:2] = flags
        recs["amount"][:2] = int(transfer["amount_paise"])
        recs["other"][:2] = (stable_hash(index.payee), stable_hash(index.payer))
        recs["aux"][0] = stable_hash(index.device)
        keys = (vpa_key(index.payer), vpa_key(index.payee), device_key(index.device))
        self.store.append([(k, r.tobytes()) for k, r in zip(keys, recs, strict=True)])
        self.counts["transfers_recorded"] += 1
        return True

    def record_outcome(self, transfer_id: str, status: str, response_code: str | None) -> bool:
        """Record a transfer's outcome (its latest counts); False if the transfer is unknown."""
        index = self._index(transfer_id)
        if index is None:
            return False
        rec = records(1)
        rec["kind"] = OUTCOME
        rec["time"] = index.created
        rec["tx"] = stable_hash(transfer_id)
        rec["flags"] = status_bits(status, response_code)
        self.store.append([(k, rec.tobytes()) for k in index.vpa_keys()])
        self.counts["outcomes_recorded"] += 1
        return True

    def record_account_event(self, vpa: str, event_type: str, event_time: datetime) -> None:
        """Record an account event; kinds no feature reads are ignored."""
        code = EVENT_CODE.get(event_type)
        if code is None:
            return
        rec = records(1)
        rec["kind"] = EVENT
        rec["code"] = code
        rec["time"] = micros(event_time)
        self.store.append([(vpa_key(vpa), rec.tobytes())])
        self.counts["events_recorded"] += 1

    def record_label(
        self,
        transfer_id: str,
        label: str,
        reported_at: datetime,
        *,
        fraud_type: str | None = None,
        source: str | None = None,
    ) -> bool:
        """Record a label; False if the transfer is unknown. Only FRAUD labels are kept: no
        feature reads LEGIT ones."""
        index = self._index(transfer_id)
        if index is None:
            return False
        if label != "FRAUD":
            return True
        mule = MULE_CONFIRMED if (fraud_type, source) == ("MULE", "BANK_CONFIRMED") else 0
        roles = {vpa_key(index.payer): AS_PAYER}
        payee = vpa_key(index.payee)
        roles[payee] = roles.get(payee, 0) | AS_PAYEE | mule
        roles[device_key(index.device)] = AS_DEVICE
        recs = records(len(roles))
        recs["kind"] = FRAUD
        recs["flags"] = list(roles.values())
        recs["time"] = micros(reported_at)
        recs["time2"] = index.created
        recs["tx"] = stable_hash(transfer_id)
        self.store.append([(k, r.tobytes()) for k, r in zip(roles, recs, strict=True)])
        self.counts["labels_recorded"] += 1
        return True

    # --- upkeep --------------------------------------------------------------------------

    def compact(self, key: str, horizon: datetime) -> bool:
        """Fold the key's transfers created before `horizon` into summaries (`compute.compact`);
        False if another writer changed the key meanwhile (nothing is lost: try again)."""
        (data,) = self.store.read([key])
        return self._replace(key, data, compute.decode(data), micros(horizon))

    def _compact_if_due(self, key: str, data: bytes, recs: np.ndarray, t: int) -> None:
        oldest = compute.oldest_transfer(recs)
        old = oldest is not None and oldest < t - COMPACT_AFTER
        # A busy payee gets an OUTCOME per transfer: folding them into their transfers keeps
        # every query from matching thousands of outcomes to transfers (`compute.resolve`).
        if old or compute.outcomes(recs) > FOLD_OUTCOMES_AFTER:
            self._replace(key, data, recs, t - KEEP)

    def _replace(self, key: str, data: bytes, recs: np.ndarray, horizon: int) -> bool:
        new = compute.compact(recs, horizon).tobytes()
        done = self.store.replace(key, data, new)
        self.counts["compactions" if done else "compactions_skipped"] += 1
        return done

    def _index(self, transfer_id: str) -> TransferIndex | None:
        value = self.store.get(index_key(transfer_id))
        return None if value is None else TransferIndex.decode(value)
