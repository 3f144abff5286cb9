"""The online decision path, without HTTP: validate, features, score, policy, record, remember.

`DecisionService.decide` is called once per request, from a request thread:

1. A transfer already decided (its row in the online log) gets that decision back, byte for
   byte, and nothing changes; the same id with other content is a conflict.
2. The feature state and the model run on a small pool of their own, and the request waits for
   them at most until its deadline (`decision_deadline_ms`, counted from the request's
   arrival). An error or a late answer leaves the model out: the hard rules still apply, then
   the fallback (`decision_fallback`) decides with reason MODEL_UNAVAILABLE.
3. The decision is recorded durably (group commit, `pipelines.decisions.online_log`), then the
   transfer enters the feature state, then the answer leaves.

The model, its version, its policy and the allow list are one immutable `Live` value, swapped
whole by a background thread when the registry's LIVE pointer moves. A request reads it once,
so every decision carries the one (model, policy) pair that made it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pipelines.decisions.online_log import (
    OnlineDecisionLog,
    decision_record,
    find_decision,
    pack_features,
)
from pipelines.decisions.policy import (
    DECISION_INPUT_COLUMNS,
    Policy,
    decide_one,
    model_policy,
    read_allowlist,
)
from pipelines.decisions.record import DecisionRecord, decision_id
from pipelines.faults import crash_point
from pipelines.risk.registry import ModelRegistry
from pipelines.serving.metrics import ServiceMetrics
from pipelines.serving.schemas import (
    AccountEventRequest,
    Applied,
    LabelRequest,
    OutcomeRequest,
    TransferRequest,
)
from pipelines.settings import Settings

log = logging.getLogger(__name__)

NO_MODEL = "none"
# The policy of decisions made before any model is loaded: the hard rules, then the fallback.
HARD_RULES_ONLY = Policy(version="policy-none", hold_threshold=1.0)
# The score a decision carries when the model did not score it (decisions-v1 wants a number;
# MODEL_UNAVAILABLE among the reason codes says it is none).
NO_SCORE = 0.0
STAGE_THREADS = 8


class FeatureState(Protocol):
    """What the service asks of the online feature state
    (`pipelines.features.online.state.OnlineFeatureState`)."""

    def features(self, transfer: Mapping[str, Any]) -> dict[str, float | None]: ...
    def payee_blocklisted(self, payee_vpa: str, as_of: datetime) -> bool: ...
    def record_transfer(self, transfer: Mapping[str, Any]) -> bool: ...
    def record_outcome(self, transfer_id: str, status: str, response_code: str | None) -> bool: ...
    def record_account_event(self, vpa: str, event_type: str, event_time: datetime) -> None: ...
    def record_label(
        self,
        transfer_id: str,
        label: str,
        reported_at: datetime,
        *,
        fraud_type: str | None = None,
        source: str | None = None,
    ) -> bool: ...
    def has_transfer(self, transfer_id: str) -> bool: ...
    def stats(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class Live:
    """What decides, swapped as one value: the model and its version, the policy made for it,
    the allow list (and the allow-list file's mtime, to notice an edit)."""

    model: Any | None
    model_version: str
    policy: Policy
    allowlist: frozenset[str]
    allowlist_mtime: float | None = None


@dataclass(frozen=True)
class Answer:
    """An HTTP status and its JSON body."""

    status: int
    body: dict[str, Any]


class ConflictError(Exception):
    """The transfer was decided before, from different content."""


@dataclass
class _Stage:
    """What the feature-and-score stage got done, step by step: a late or failed stage still
    leaves what it finished (the block-list answer, the features) for the fallback."""

    blocklisted: bool | None = None
    features: dict[str, float | None] | None = None
    score: float | None = None
    failed: str | None = None  # state_error or model_error
    seconds: dict[str, float] = field(default_factory=dict)


def utc_day_start(moment: datetime) -> datetime:
    """Midnight UTC of `moment`'s UTC day: the batch's block list is the one in force then."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class DecisionService:
    """The decision path and what it holds: the live model, the state, the durable log."""

    def __init__(
        self,
        settings: Settings,
        state: FeatureState,
        decision_log: OnlineDecisionLog,
        registry: ModelRegistry,
        *,
        metrics: ServiceMetrics | None = None,
        stage_threads: int = STAGE_THREADS,
    ) -> None:
        self.settings = settings
        self.state = state
        self.decision_log = decision_log
        self.registry = registry
        self.metrics = metrics or ServiceMetrics()
        self.deadline_s = settings.decision_deadline_ms / 1000.0
        self.fallback = settings.decision_fallback
        self._live = Live(None, NO_MODEL, HARD_RULES_ONLY, frozenset())
        self._stage_pool = ThreadPoolExecutor(stage_threads, thread_name_prefix="decision-stage")
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._failed_version: str | None = None
        self.metrics.watch_state(state.stats)
        decision_log.on_commit = self._committed

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> DecisionService:
        """Start the log's writer, load the live model (if any) and watch the registry."""
        self.decision_log.start()
        self.refresh()
        self._stop.clear()
        self._poller = threading.Thread(target=self._poll, name="registry-poller", daemon=True)
        self._poller.start()
        return self

    def close(self) -> None:
        """Stop watching the registry, let decisions in progress record, stop the writer."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(5)
        self._stage_pool.shutdown(wait=False, cancel_futures=True)
        self.decision_log.close()

    @property
    def live(self) -> Live:
        return self._live

    def missing(self) -> list[str]:
        """What the service lacks to decide with its model (empty: ready)."""
        live = self._live
        lacking = []
        if live.model is None:
            lacking.append(f"model (no live model loaded from {self.registry.root})")
        if live.policy is HARD_RULES_ONLY:
            lacking.append("policy (made for the live model)")
        try:
            self.state.stats()
        except Exception as exc:
            lacking.append(f"feature state ({type(exc).__name__}: {exc})")
        return lacking

    # --- hot swap --------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Swap in the registry's live model (with its policy) and the allow list if either
        changed; True if something was swapped. A model that fails to load leaves the current
        one deciding (counted, logged once per version)."""
        current = self._live
        path = self.settings.paths.allowlist
        mtime = path.stat().st_mtime if path.exists() else None
        version = self.registry.live_version()
        model_changed = (version or NO_MODEL) != current.model_version
        if not model_changed and mtime == current.allowlist_mtime:
            return False
        model, model_version, policy = current.model, current.model_version, current.policy
        if model_changed and version is not None:
            try:
                model, policy = self._load(version)
            except Exception as exc:
                self.metrics.model_load_failures.inc()
                if self._failed_version != version:
                    log.error(
                        "live model %s did not load, still deciding with %s: %s",
                        version,
                        current.model_version,
                        exc,
                    )
                    self._failed_version = version
                if mtime == current.allowlist_mtime:
                    return False
            else:
                model_version = version
        allowlist = frozenset(read_allowlist(path))
        self._live = Live(model, model_version, policy, allowlist, mtime)  # the one swap
        if model_version != current.model_version:
            self.metrics.model_swaps.inc()
            self.metrics.model.info(
                {"model_version": model_version, "policy_version": policy.version}
            )
            self.metrics.model_loaded.set(1 if model is not None else 0)
            log.info("deciding with model %s, %s", model_version, policy.version)
        return True

    def _load(self, version: str) -> tuple[Any, Policy]:
        model = self.registry.load(version)
        policy = model_policy(self.registry, version)  # this version's, even if LIVE moved on
        # The first score pays for lazy set-up (compiled kernels, caches): not a request's.
        model.risk_score_one({})
        return model, policy

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.registry_poll_seconds):
            try:
                self.refresh()
            except Exception:  # the registry unreadable for a moment: try again next poll
                log.exception("registry poll failed")

    # --- decisions -------------------------------------------------------------------------

    def decide(self, request: TransferRequest, started: float) -> Answer:
        """The decision of one transfer, `started` being its arrival (`time.perf_counter()`).
        Raises ConflictError for a transfer decided before from other content."""
        fingerprint = request.fingerprint()
        if self._maybe_decided(request.transfer_id):
            existing = find_decision(self.decision_log.engine, request.transfer_id)
            if existing is not None:
                return self._repeat(existing, fingerprint, request.transfer_id)

        arrived_at = datetime.now(UTC)
        live = self._live  # read once: this decision's model and policy
        transfer = request.transfer(arrived_at)
        stage = _Stage()
        cause = None
        if live.model is None:
            cause = "no_model"
        future: Future = self._stage_pool.submit(self._features_and_score, stage, live, transfer)
        remaining = self.deadline_s - (time.perf_counter() - started)
        try:
            future.result(timeout=max(remaining, 0.0))
        except FutureTimeout:
            future.cancel()  # still queued: never runs; running: its result is ignored
            cause = cause or "deadline"
        except Exception:
            cause = cause or stage.failed or "state_error"
        # Read once: a late stage still running may fill these in after the deadline.
        features, blocklisted, score = stage.features, stage.blocklisted, stage.score
        if cause is not None:
            score = None
        elif score is None or not 0.0 <= score <= 1.0:
            cause, score = "model_error", None

        values = {name: transfer[name] for name in DECISION_INPUT_COLUMNS}
        if features is not None:
            values.update(features)
        decision, codes = decide_one(
            values,
            live.policy,
            score=score,
            # A block list the state could not answer in time is taken as not listing the payee.
            blocklisted=bool(blocklisted),
            allowlist=set(live.allowlist),
            fallback=self.fallback,
        )
        record = DecisionRecord(
            decision_id=decision_id(request.transfer_id, live.model_version, live.policy.version),
            transfer_id=request.transfer_id,
            decision=decision,
            risk_score=NO_SCORE if score is None else score,
            reason_codes=codes,
            model_version=live.model_version,
            policy_version=live.policy.version,
            decided_at=datetime.now(UTC),
        )
        decided_s = time.perf_counter() - started
        row = {
            **record.model_dump(),
            "request_sha256": fingerprint,
            "request": request.canonical_dict(),
            "created_at": transfer["created_at"],
            "features": pack_features(features),
            "fallback": score is None,
            "fallback_cause": cause,
            "latency_us": int(decided_s * 1e6),
        }
        recorded = self.decision_log.record(row)
        if not recorded.inserted:  # decided meanwhile by a concurrent request
            return self._repeat(recorded.row, fingerprint, request.transfer_id)
        crash_point("online-decision")  # recorded, not yet in the state: a restart reconciles
        try:
            self.state.record_transfer(transfer)
        except Exception:
            # The decision is recorded: the next start restores the state from the record.
            self.metrics.state_write_failures.inc()
            log.exception("feature state did not take transfer %s", request.transfer_id)

        m = self.metrics
        m.latency.observe(time.perf_counter() - started)
        for stage_name, seconds in stage.seconds.items():
            m.stage_latency.labels(stage_name).observe(seconds)
        if cause is not None:
            m.fallbacks.labels(cause).inc()
        for code in codes or ["NONE"]:
            m.decisions.labels(decision, code).inc()
        return Answer(200, record.to_json_dict())

    def _maybe_decided(self, transfer_id: str) -> bool:
        """Whether the record may hold a decision of the transfer: every recorded transfer is
        in the state (reconciled at start), so one the state lacks is new and the lookup is
        skipped. Only a shortcut: the record's unique transfer_id catches any repeat the state
        missed (its write failed), and `record` then returns the stored decision."""
        try:
            return self.state.has_transfer(transfer_id)
        except Exception:
            return True

    def _repeat(self, row: Mapping[str, Any], fingerprint: str, transfer_id: str) -> Answer:
        if row["request_sha256"] != fingerprint:
            self.metrics.conflicts.inc()
            raise ConflictError(
                f"transfer {transfer_id} was decided before ({row['decision_id']}) from a "
                "different request: a transfer_id names one transfer"
            )
        self.metrics.idempotent_repeats.inc()
        return Answer(200, decision_record(row).to_json_dict())

    def _features_and_score(self, stage: _Stage, live: Live, transfer: dict[str, Any]) -> None:
        clock = time.perf_counter
        try:
            t0 = clock()
            stage.blocklisted = self.state.payee_blocklisted(
                transfer["payee_vpa"], utc_day_start(transfer["created_at"])
            )
            stage.features = self.state.features(transfer)
            stage.seconds["features"] = clock() - t0
        except Exception:
            stage.failed = "state_error"
            log.exception("feature state failed for transfer %s", transfer["transfer_id"])
            raise
        if live.model is None:
            return
        try:
            t1 = clock()
            score = float(live.model.risk_score_one(stage.features))
            stage.seconds["score"] = clock() - t1
        except Exception:
            stage.failed = "model_error"
            log.exception(
                "model %s failed on transfer %s", live.model_version, transfer["transfer_id"]
            )
            raise
        stage.score = score if math.isfinite(score) else None

    def _committed(self, batch_size: int, seconds: float) -> None:
        self.metrics.record_batches.observe(batch_size)
        self.metrics.record_commit.observe(seconds)

    # --- what the state learns later ----------------------------------------------------------

    def record_outcome(self, transfer_id: str, outcome: OutcomeRequest) -> bool:
        """Record a decided transfer's outcome; False if the state does not know it."""
        return self.state.record_outcome(transfer_id, outcome.status, outcome.response_code)

    def record_account_events(self, events: Iterable[AccountEventRequest]) -> Applied:
        applied = 0
        for event in events:
            self.state.record_account_event(event.vpa, event.event_type, event.event_time)
            applied += 1
        return Applied(applied=applied, unknown=0)

    def record_labels(self, labels: Iterable[LabelRequest]) -> Applied:
        applied = unknown = 0
        for item in labels:
            known = self.state.record_label(
                item.transfer_id,
                item.label,
                item.reported_at,
                fraud_type=item.fraud_type,
                source=item.source,
            )
            applied += bool(known)
            unknown += not known
        return Applied(applied=applied, unknown=unknown)
