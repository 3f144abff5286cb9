"""Running the Dagster jobs from the CLI, against a persistent instance in the data directory.

Runs started here show up in the Dagster UI (`make ui`) like runs started by the daemon: on their
job's page and on the overview timeline. The UI finds a job's runs by the run's code-location
origin, which runs executed with `execute_in_process` lack; so `run_job` creates the run with the
origin of the project's code location (the one `dg dev` serves, `CODE_LOCATION`) and executes it
in this process. Dagster has no public API for that (its own `dg launch` executes without an
origin), so this module uses three internals of Dagster 1.13 (`create_run_for_job`'s origins,
`execute_run`, the origin classes); dagster is pinned to 1.13.x and `tests/test_cli.py` asks the
instance for a job's runs exactly as the UI does, so a change of those internals fails loudly.

Runs of one instance take turns. Every step that opens the DuckDB warehouse is in the `warehouse`
pool (one slot), and the instance keeps a pool's claimed slots in its storage, by run: a run
killed in the middle of a step (`kill -9`, OOM killer, a closed laptop lid) never frees its slot,
and Dagster's in-process executor would then poll for it forever, busily, with SIGINT and SIGTERM
captured. So `run_job`, before it starts the job:

1. takes the instance's run lock, an exclusive `flock` on a file in the instance directory held
   for the whole run: the kernel drops it when the process dies, however it dies. While another
   upi-risk run holds it, the command says which run it waits for, and a signal stops the wait;
2. reclaims what dead runs hold: a run that is not finished but whose process is gone is marked
   failed ("its process died") and its pool slots are freed; a finished run's leftover slots are
   freed too;
3. waits, saying so and interruptibly, while a live run started elsewhere (the daemon, the UI, a
   notebook) holds a slot of a pool the job uses.

Only then does Dagster get the job, so it finds the slots free instead of waiting in its own loop.
"""

import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import dagster as dg

from pipelines.settings import DataDir, Settings

# The code location `dg dev` serves (pyproject's [tool.dg.project]) and its module.
CODE_LOCATION = "upi-risk"
DEFINITIONS_MODULE = "pipelines.definitions"
# The name Dagster gives the one repository of a `Definitions` object.
REPOSITORY_NAME = "__repository__"

_INSTANCE_YAML = """\
# Written by upi-risk. DuckDB allows one writer process per file: every asset or check that
# opens the warehouse is in the `warehouse` pool, limited to one step at a time across runs.
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""

# Run tags naming the process that executes a run, so that a later run can tell it is gone.
PID_TAG = "upi-risk/pid"
HOST_TAG = "upi-risk/host"
LOCK_TAG = "upi-risk/run-lock"
RUN_LOCK_FILE = "upi-risk-run.lock"
POLL_SECONDS = 0.5
_UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def prepare_instance(data_dir: DataDir) -> dg.DagsterInstance:
    """The instance in `<data-dir>/dagster` (or in `$DAGSTER_HOME` where that is set)."""
    data_dir.ensure()
    home = os.environ.get("DAGSTER_HOME") or str(data_dir.dagster_home)
    config = data_dir.dagster_home / "dagster.yaml"
    if home == str(data_dir.dagster_home) and not config.exists():
        config.write_text(_INSTANCE_YAML)
    return dg.DagsterInstance.from_config(home)


def repository_label() -> str:
    """The label the UI filters a job's runs by: `<repository>@<code location>`."""
    return f"{REPOSITORY_NAME}@{CODE_LOCATION}"


def _execute_with_origin(
    instance: dg.DagsterInstance,
    job: dg.JobDefinition,
    *,
    run_id: str,
    tags: dict[str, str],
    run_config: dict[str, Any],
) -> Any:
    """Execute `job` in this process as a run of the project's code location."""
    # Dagster internals: see the module docstring.
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import create_execution_plan, execute_run
    from dagster._core.remote_origin import (
        ManagedGrpcPythonEnvCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(
            executable_path=sys.executable, module_name=DEFINITIONS_MODULE
        ),
        location_name=CODE_LOCATION,
    )
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(location, REPOSITORY_NAME),
        job_name=job.name,
    )
    in_memory = InMemoryJob(job)
    plan = create_execution_plan(in_memory, run_config=run_config, instance_ref=instance.get_ref())
    run = instance.create_run_for_job(
        job_def=job,
        execution_plan=plan,
        run_id=run_id,
        run_config=run_config,
        tags={**job.run_tags, **tags},
        remote_job_origin=origin,
    )
    return execute_run(in_memory, run, instance)


@dataclass
class StepError:
    """A failed step's error and the errors that caused it (class name, message), outermost
    first: what the CLI turns into one line naming the cause."""

    step: str
    chain: list[tuple[str, str]]


@dataclass
class JobSummary:
    """What a job run did: per asset its metadata, per check its outcome."""

    run_id: str
    success: bool
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    errors: list[StepError] = field(default_factory=list)


class RunWaitInterrupted(KeyboardInterrupt):
    """A signal stopped `run_job` while it waited for another run: the job did not start."""

    def __init__(self, signum: int, job_name: str, waiting_for: str):
        self.signum = signum
        self.job_name = job_name
        self.waiting_for = waiting_for
        super().__init__(self.message)

    @property
    def message(self) -> str:
        name = signal.Signals(self.signum).name
        return (
            f"stopped by {name} while waiting for {self.waiting_for}: {self.job_name} did not run"
        )


def _plain(value: dg.MetadataValue) -> Any:
    return getattr(value, "value", value)


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_job(
    job_name: str,
    settings: Settings,
    *,
    # The console shows nothing of the run's own log: the command prints what failed in one
    # line, and the full log (traces included) stays in the run's storage for the UI.
    log_level: str = "CRITICAL",
    tags: dict[str, str] | None = None,
    on_wait: Callable[[str], None] = _to_stderr,
) -> JobSummary:
    """Execute a job of the project's definitions in this process; never raises on a failed step.

    `tags` select partitions, e.g. a range of days for a daily-partitioned job. While the job
    waits for another run (see the module's docstring) `on_wait` gets one line saying for what;
    SIGINT or SIGTERM then stops the wait with `RunWaitInterrupted`, and the job does not run.
    """
    instance = prepare_instance(settings.paths)
    from pipelines.definitions import build_defs

    job = build_defs(settings).resolve_job_def(job_name)
    pools = sorted(job.graph.pools)
    run_id = str(uuid.uuid4())
    lock = _RunLock(Path(instance.root_directory) / RUN_LOCK_FILE)
    with ExitStack() as held:
        with _signals_stop_the_wait(job_name) as waiting:
            held.enter_context(lock.held(job_name, run_id, on_wait, waiting))
            waiting.what = "the instance's pools"
            for line in reclaim_dead_runs(instance, lock):
                on_wait(line)
            _wait_for_pools(instance, lock, pools, on_wait, waiting)
        result = _execute_with_origin(
            instance,
            job,
            run_id=run_id,
            tags={**(tags or {}), **lock.tags},
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
    summary = JobSummary(run_id=result.run_id, success=result.success)
    for event in result.all_events:
        if event.is_step_materialization:
            mat = event.step_materialization_data.materialization
            summary.assets[mat.asset_key.to_user_string()] = {
                k: _plain(v) for k, v in mat.metadata.items()
            }
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            summary.checks.append(
                {
                    "asset": evaluation.asset_key.to_user_string(),
                    "check": evaluation.check_name,
                    "passed": evaluation.passed,
                    "severity": evaluation.severity.value,
                    "metadata": {k: _plain(v) for k, v in evaluation.metadata.items()},
                }
            )
        elif event.is_step_skipped:
            summary.skipped.append(event.step_key)
        elif event.is_step_failure:
            error = event.step_failure_data.error
            summary.failures.append(f"{event.step_key}: {error.message.strip() if error else ''}")
            summary.errors.append(StepError(event.step_key or "", _error_chain(error)))
    return summary


def _error_chain(error: Any) -> list[tuple[str, str]]:
    """(class name, message) of an error and of its causes and contexts, outermost first."""
    chain = []
    while error is not None:
        chain.append((error.cls_name or "", (error.message or "").strip()))
        error = error.cause or error.context
    return chain


@dataclass
class _Waiting:
    what: str


@contextmanager
def _signals_stop_the_wait(job_name: str) -> Iterator[_Waiting]:
    """SIGINT and SIGTERM raise `RunWaitInterrupted` in the block (main thread only: elsewhere
    Python delivers no signals). Dagster captures both while a job runs, and its in-process
    executor does not look at them while it waits for a pool slot: the waiting is done here."""
    waiting = _Waiting("another run")
    if threading.current_thread() is not threading.main_thread():
        yield waiting
        return

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise RunWaitInterrupted(signum, job_name, waiting.what)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield waiting
    finally:
        for signum, handler in previous.items():
            # None: not set from Python; the default action is the closest to put back.
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


class _RunLock:
    """The instance's run lock: an exclusive `flock` that the kernel releases with its process.

    The file also says who holds it, for the message of a run that waits."""

    _held_here = threading.local()

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self.tags: dict[str, str] = {}

    @property
    def is_held(self) -> bool:
        return self._fd is not None

    def holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def _try_acquire(self) -> int | None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @contextmanager
    def held(
        self, job_name: str, run_id: str, on_wait: Callable[[str], None], waiting: "_Waiting"
    ) -> Iterator[None]:
        """Hold the lock for the block, waiting for it (one line per holder) if need be."""
        if getattr(self._held_here, "path", None) == self.path:
            raise RuntimeError(
                f"run_job({job_name!r}) called inside a run_job of the same thread: runs of an "
                "instance take turns, so it would wait for itself"
            )
        announced = None
        while (fd := self._try_acquire()) is None:
            holder = self.holder()
            waiting.what = _describe_holder(holder)
            if holder.get("run_id") != announced:
                announced = holder.get("run_id")
                on_wait(
                    f"waiting for {waiting.what} to finish: runs of this instance take turns "
                    "at the warehouse (Ctrl-C to stop)"
                )
            time.sleep(POLL_SECONDS)
        self._fd = fd
        try:
            self._held_here.path = self.path
            host = socket.gethostname()
            self.tags = {PID_TAG: str(os.getpid()), HOST_TAG: host, LOCK_TAG: str(self.path)}
            record = {"run_id": run_id, "job": job_name, "pid": os.getpid(), "host": host}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
            yield
        finally:
            self._held_here.path = None
            self._fd = None
            os.ftruncate(fd, 0)
            os.close(fd)  # closing the only descriptor releases the flock


def _describe_holder(holder: dict[str, Any]) -> str:
    if not holder.get("run_id"):
        return "another upi-risk run"
    where = f"pid {holder.get('pid')}"
    if holder.get("host") and holder["host"] != socket.gethostname():
        where += f" on {holder['host']}"
    return f"run {holder['run_id']} ({holder.get('job')}, {where})"


def _describe_run(instance: dg.DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    if run is None:
        return f"run {run_id} (deleted)"
    process = _process_of(instance, run)
    return f"run {run_id} ({run.job_name}{f', pid {process[0]}' if process else ''})"


def reclaim_dead_runs(instance: dg.DagsterInstance, lock: _RunLock | None = None) -> list[str]:
    """Free what runs that will never finish hold; one line per run reclaimed.

    A run that is not finished but whose process is gone is marked failed and its pool slots
    (claimed and pending) are freed; a finished or deleted run's leftover slots are freed.
    Runs whose process may be alive, or that a run launcher started, are left alone.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    in_pools: dict[str, set[str]] = {}
    for pool in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(pool)
        for run_id in {s.run_id for s in info.claimed_slots} | {
            s.run_id for s in info.pending_steps
        }:
            in_pools.setdefault(run_id, set()).add(pool)
    # Runs of upi-risk left unfinished by a dead process, holding slots or not: the UI would show
    # them running for ever.
    tagged = {
        run.run_id
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=_UNFINISHED))
        if PID_TAG in run.tags
    }
    lines = []
    for run_id in sorted(set(in_pools) | tagged):
        pools = ", ".join(sorted(in_pools.get(run_id, ())))
        record = instance.get_run_record_by_id(run_id)
        if record is not None and not record.dagster_run.is_finished:
            run = record.dagster_run
            process = _process_of(instance, run)
            if process is None or not _is_dead(record, process, lock):
                continue
            pid, host = process
            message = (
                f"its process died (pid {pid}{f' on {host}' if host else ''}) before the run "
                "finished: upi-risk marked it failed"
                + (f" and freed its {pools} pool slots" if pools else "")
            )
            instance.report_run_failed(run, message=message)
            lines.append(f"run {run_id} ({run.job_name}): {message}")
        elif pools:
            state = (
                "was deleted" if record is None else f"ended ({record.dagster_run.status.value})"
            )
            lines.append(f"run {run_id} {state} but still held {pools} pool slots: freed them")
        if pools:
            storage.free_concurrency_slots_for_run(run_id)
    return lines


def _process_of(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[int, str | None] | None:
    """The pid (and host, when known) of the process executing `run` in-process, if known."""
    if PID_TAG in run.tags:
        return int(run.tags[PID_TAG]), run.tags.get(HOST_TAG)
    if run.remote_job_origin is not None:
        return None  # started by a run launcher: Dagster's run monitoring watches its worker
    # Plain `execute_in_process` (an older upi-risk, a notebook): the in-process executor logs
    # its pid. Such a run executes on a host that shares the instance directory: this one.
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        pid = data.metadata.get("pid") if data else None
        if pid is not None:
            return int(_plain(pid)), None
    return None


def _is_dead(record: dg.RunRecord, process: tuple[int, str | None], lock: _RunLock | None) -> bool:
    pid, host = process
    if (
        lock is not None
        and lock.is_held
        and record.dagster_run.tags.get(LOCK_TAG) == str(lock.path)
    ):
        return True  # were its process alive, it would hold the lock that this one holds
    if host is not None and host != socket.gethostname():
        return False  # cannot tell from here
    return not _alive_since(pid, record.create_timestamp.timestamp())


def _alive_since(pid: int, created: float) -> bool:
    """Whether process `pid` exists, is not a zombie, and did not start after `created` (then
    the pid is another process's, reused after the run's process died)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, another user's
    started = _linux_process_start(pid)
    if started is None:
        return True
    state, start = started
    return state != "Z" and start <= created + 2  # /proc/stat's boot time is in whole seconds


def _linux_process_start(pid: int) -> tuple[str, float] | None:
    """State and start time (epoch seconds) of a process, from /proc; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return fields[0], boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _wait_for_pools(
    instance: dg.DagsterInstance,
    lock: _RunLock,
    pools: list[str],
    on_wait: Callable[[str], None],
    waiting: "_Waiting",
) -> None:
    """Wait until each pool of the job has a free slot, saying once per holder what for.

    Holders here are runs that upi-risk did not start (the lock orders its own runs), or dead
    runs that the lock cannot vouch for until their process is seen gone."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    announced: set[tuple[str, str]] = set()
    while True:
        busy = []
        for pool in pools:
            info = storage.get_concurrency_info(pool)
            if info.limit is not None and len(info.claimed_slots) >= info.limit:
                busy.extend((pool, run_id) for run_id in sorted(info.active_run_ids))
        if not busy:
            return
        for pool, run_id in busy:
            waiting.what = f"the {pool} pool, held by {_describe_run(instance, run_id)}"
            if (pool, run_id) not in announced:
                announced.add((pool, run_id))
                on_wait(f"waiting for {waiting.what} (Ctrl-C to stop)")
        time.sleep(POLL_SECONDS)
        for line in reclaim_dead_runs(instance, lock):
            on_wait(line)
