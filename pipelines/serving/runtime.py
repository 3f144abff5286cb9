"""Running the service: open the state (restore, or bootstrap from the warehouse), put back what
a crash kept from it, serve with uvicorn, snapshot on a clean stop."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from pipelines.decisions.online_log import OnlineDecisionLog, decisions_since, online_engine
from pipelines.features.online.state import OnlineFeatureState
from pipelines.features.online.store import StateStore
from pipelines.risk.registry import ModelRegistry
from pipelines.serving.app import create_app
from pipelines.serving.schemas import TransferRequest
from pipelines.serving.service import DecisionService
from pipelines.settings import Settings

log = logging.getLogger(__name__)

_RECONCILE_CHUNK = 5_000
_SWITCH_INTERVAL_S = 0.0002


def open_store(settings: Settings) -> StateStore:
    """The state store the settings name: the embedded one in the data directory, or Redis."""
    if settings.state_backend == "redis":
        from pipelines.features.online.redis_store import RedisStore

        if settings.redis_url is None:
            raise ValueError(
                "state_backend is redis but redis_url is not set: set UPI_RISK_REDIS_URL "
                "(or redis_url in settings.toml)"
            )
        return RedisStore(settings.redis_url.get_secret_value())
    from pipelines.features.online.embedded import EmbeddedStore

    return EmbeddedStore(settings.paths.online_state)


def open_state(settings: Settings, store: StateStore) -> tuple[OnlineFeatureState, str]:
    """The feature state over `store`, and how it was opened: as the store holds it, or, when
    the store is empty, built from the warehouse's ledger (empty without a warehouse)."""
    stats = store.stats()
    if stats.get("keys", 0) or stats.get("index_keys", 0):
        return OnlineFeatureState(store), f"restored ({stats.get('keys', 0)} keys)"
    path = settings.paths.warehouse
    if not path.exists():
        return OnlineFeatureState(store), f"empty (no warehouse at {path})"
    from pipelines.features.online.bootstrap import bootstrap_from_warehouse
    from pipelines.warehouse import warehouse

    with warehouse(path, read_only=True) as con:
        state = bootstrap_from_warehouse(con, store)
    return state, f"bootstrapped from {path} ({store.stats().get('keys', 0)} keys)"


def reconcile(state: OnlineFeatureState, engine: Engine) -> int:
    """Record in the state every recorded online decision's transfer it lacks (a process killed
    between recording a decision and updating the state); return how many."""
    added, cursor = 0, 0
    while True:
        rows, cursor = decisions_since(engine, cursor, limit=_RECONCILE_CHUNK)
        if not rows:
            return added
        for row in rows:
            if state.has_transfer(row["transfer_id"]):
                continue
            request = TransferRequest.model_validate(row["request"])
            added += state.record_transfer(request.transfer(row["created_at"]))


@dataclass
class Runtime:
    """Everything a running service holds, so that it can be stopped in order."""

    store: StateStore
    state: OnlineFeatureState
    service: DecisionService
    opened: str
    reconciled: int

    def close(self, *, snapshot: bool = True) -> None:
        """Snapshot the state (a restart then loads one file and a short log) and close it."""
        try:
            if snapshot and hasattr(self.store, "snapshot"):
                self.store.snapshot()
        finally:
            self.store.close()


def build_runtime(settings: Settings) -> Runtime:
    """The state (restored or bootstrapped, then reconciled) and the service over it."""
    store = open_store(settings)
    try:
        state, opened = open_state(settings, store)
        engine = online_engine(settings.operational_database_url)
        reconciled = reconcile(state, engine)
        service = DecisionService(
            settings, state, OnlineDecisionLog(engine), ModelRegistry(settings.paths.models)
        )
    except BaseException:
        store.close()
        raise
    return Runtime(store, state, service, opened, reconciled)


def run_server(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve decisions on host:port until SIGINT or SIGTERM; then finish the requests in
    flight, commit their decisions and snapshot the state."""
    import uvicorn

    # A request hops between threads (the event loop, the endpoint's worker, the feature stage,
    # the group-commit writer); with CPython's default 5 ms switch interval each hop can wait
    # that long for the GIL behind a busy thread, and the hops add up to tens of milliseconds.
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    runtime = build_runtime(settings)
    announce(f"feature state: {runtime.opened}; {runtime.reconciled} recorded transfers restored")
    clean = False
    # uvicorn stops on SIGINT / SIGTERM, then raises the signal again with the handler it found:
    # with the default ones the process would die there, before the snapshot below.
    stops: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda received, _frame: stops.append(received))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        config = uvicorn.Config(
            create_app(runtime.service),
            host=host,
            port=port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=10,
            log_level="warning",
        )
        server = uvicorn.Server(config)
        announce(f"deciding on http://{host}:{port}/v1/decisions (docs at /docs)")
        server.run()
        clean = True
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        runtime.close(snapshot=clean)
