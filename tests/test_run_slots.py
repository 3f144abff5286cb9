"""Runs on one instance take turns at the warehouse pool; a run killed mid-step does not wedge it.

Each test starts real processes on a temporary data directory: a run whose first warehouse step
is held until the test releases it, then `upi-risk ingest` beside (or after) it. Waits are on
observable events (a marker file, a claimed slot, a line of output); the timeouts are hang guards.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pipelines.defs.resources import WAREHOUSE_POOL
from pipelines.ledger import contract as c
from tests.factories import account_event, label, land_parquet, transfer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HANG_GUARD = 240  # seconds; only there so that a regression fails instead of hanging the suite

# A run of `ledger_ingest` whose warehouse steps wait for the file `release` before loading, so
# that the test can look at (or kill) a run that holds the warehouse slot. `via` is `run_job`
# (the upi-risk path) or `plain`: bare in-process execution on the instance, as an older upi-risk
# did and as a notebook may, with none of the run tags that run_job adds.
HELD_RUN = """
import sys, time
from pathlib import Path

import pipelines.defs.ledger.assets as assets
from pipelines.settings import DataDir

data_dir, release, held, via = DataDir.resolve(sys.argv[1]), *map(Path, sys.argv[2:4]), sys.argv[4]
ingest_landing = assets.ingest_landing

def ingest_when_released(*args, **kwargs):
    held.touch()
    while not release.exists():
        time.sleep(0.05)
    return ingest_landing(*args, **kwargs)

assets.ingest_landing = ingest_when_released
if via == "run_job":
    from pipelines.runs import run_job

    from pipelines.settings import Settings

    sys.exit(0 if run_job("ledger_ingest", Settings(data_dir=data_dir.root)).success else 1)
from pipelines.runs import prepare_instance

instance = prepare_instance(data_dir)
from pipelines.definitions import defs

job = defs().resolve_job_def("ledger_ingest")
sys.exit(0 if job.execute_in_process(instance=instance, raise_on_error=False).success else 1)
"""


def _env(data_dir: Path) -> dict[str, str]:
    env = {**os.environ, "DAGSTER_HOME": str(data_dir / "dagster"), "PYTHONUNBUFFERED": "1"}
    env.pop("UPI_RISK_DATA_DIR", None)
    return env


class HeldRun:
    """A `ledger_ingest` run in its own process, holding the warehouse slot until released."""

    def __init__(self, data_dir: Path, via: str = "run_job"):
        self.data_dir = data_dir
        self.release_file = data_dir / "release"
        self.held_file = data_dir / "held"
        self.log = data_dir / "held-run.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    HELD_RUN,
                    str(data_dir),
                    str(self.release_file),
                    str(self.held_file),
                    via,
                ],
                cwd=ROOT,
                env=_env(data_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_until_holding(self) -> tuple[dg.DagsterInstance, str]:
        """Wait until the run's first step holds the warehouse slot; the instance and run id."""
        _wait_for(self.held_file.exists, "the held run's step to start", self)
        instance = dg.DagsterInstance.from_config(str(self.data_dir / "dagster"))
        run_ids = _wait_for(
            lambda: _slot_holders(instance), "the held run to claim the warehouse slot", self
        )
        assert len(run_ids) == 1, run_ids
        return instance, run_ids[0]

    def release(self) -> int:
        self.release_file.touch()
        return self.process.wait(timeout=HANG_GUARD)

    def kill(self) -> None:
        _kill(self.process)

    def describe(self) -> str:
        return f"held run (exit {self.process.poll()}):\n{self.log.read_text()}"


class Command:
    """`upi-risk ingest --json` in its own process, stderr in a file the test can read as it grows."""

    def __init__(self, data_dir: Path, name: str):
        self.stderr_path = data_dir / f"{name}.stderr"
        self.stdout_path = data_dir / f"{name}.stdout"
        with self.stderr_path.open("w") as err, self.stdout_path.open("w") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pipelines.cli",
                    "ingest",
                    "--json",
                    "--data-dir",
                    str(data_dir),
                ],
                cwd=ROOT,
                env=_env(data_dir),
                stdout=out,
                stderr=err,
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def wait(self) -> int:
        try:
            return self.process.wait(timeout=HANG_GUARD)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"`upi-risk ingest` still running after {HANG_GUARD} s:\n{self.stderr}")

    def kill(self) -> None:
        _kill(self.process)

    def describe(self) -> str:
        return f"upi-risk ingest (exit {self.process.poll()}):\n{self.stderr}"


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=HANG_GUARD)


def _wait_for(condition: Callable[[], Any], what: str, *watched: HeldRun | Command) -> Any:
    """Poll `condition` until it is truthy; fail early if a watched process exits meanwhile."""
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for proc in watched:
            if proc.process.poll() is not None:
                pytest.fail(f"waiting for {what}, but a process exited:\n{proc.describe()}")
        time.sleep(0.1)
    pytest.fail(
        f"timed out after {HANG_GUARD} s waiting for {what}:\n"
        + "\n".join(proc.describe() for proc in watched)
    )


def _slot_holders(instance: dg.DagsterInstance) -> list[str]:
    info = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
    return sorted({slot.run_id for slot in info.claimed_slots})


@pytest.fixture
def data_dir(tmp_path) -> Iterator[Path]:
    root = tmp_path / "instance"
    landing = root / "landing"
    land_parquet(landing, c.TRANSFERS, "d1.parquet", [transfer(i) for i in range(1, 41)])
    land_parquet(landing, c.ACCOUNTS, "d1.parquet", [account_event(i) for i in range(1, 8)])
    land_parquet(landing, c.LABELS_STREAM, "d4.parquet", [label(3), label(7)])
    yield root


@pytest.mark.parametrize("via", ["run_job", "plain"])
def test_a_run_killed_mid_step_gives_its_slot_back(data_dir, via):
    held = HeldRun(data_dir, via)
    try:
        instance, dead_run = held.wait_until_holding()
    finally:
        held.kill()  # SIGKILL: no handler, no cleanup, the slot stays claimed in the instance
    assert held.process.returncode == -signal.SIGKILL
    assert _slot_holders(instance) == [dead_run]
    assert instance.get_run_by_id(dead_run).status == dg.DagsterRunStatus.STARTED

    after = Command(data_dir, "after")
    assert after.wait() == 0, after.stderr
    summary = json.loads(after.stdout)
    assert summary["success"] is True, summary["failures"]
    assert summary["assets"]["transfer_events"]["loaded"] == 40
    # The command said what it found and did about the dead run.
    assert dead_run in after.stderr and "died" in after.stderr

    # The dead run is over (failed, with the reason), and holds nothing any more.
    run = instance.get_run_by_id(dead_run)
    assert run.status == dg.DagsterRunStatus.FAILURE
    failure = instance.all_logs(dead_run, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert failure and "died" in failure[-1].message
    info = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
    assert info.claimed_slots == [] and info.pending_steps == []
    assert instance.get_run_by_id(summary["run_id"]).status == dg.DagsterRunStatus.SUCCESS
    instance.dispose()


# A live upi-risk run holds the instance's run lock; a plain in-process run only the pool slot.
@pytest.mark.parametrize(
    ("signum", "via"),
    [(signal.SIGINT, "run_job"), (signal.SIGTERM, "plain")],
    ids=["SIGINT-run_job", "SIGTERM-plain"],
)
def test_a_command_waiting_on_a_live_run_says_so_and_stops_on_a_signal(data_dir, signum, via):
    held = HeldRun(data_dir, via)
    waiting = None
    try:
        instance, live_run = held.wait_until_holding()
        waiting = Command(data_dir, "waiting")
        _wait_for(lambda: "waiting for" in waiting.stderr, "the waiting message", waiting, held)
        assert live_run in waiting.stderr, waiting.stderr

        waiting.process.send_signal(signum)
        assert waiting.wait() == 128 + signum, waiting.stderr
        assert "did not run" in waiting.stderr and "Traceback" not in waiting.stderr
        # It started nothing, and left the live run alone.
        assert [r.run_id for r in instance.get_runs()] == [live_run]
        assert instance.get_run_by_id(live_run).status == dg.DagsterRunStatus.STARTED
        assert _slot_holders(instance) == [live_run]
        assert held.release() == 0, held.describe()
        instance.dispose()
    finally:
        held.kill()
        if waiting:
            waiting.kill()


@pytest.mark.parametrize("via", ["run_job", "plain"])
def test_a_command_waiting_on_a_live_run_goes_once_it_ends(data_dir, via):
    held = HeldRun(data_dir, via)
    waiting = None
    try:
        instance, live_run = held.wait_until_holding()
        waiting = Command(data_dir, "waiting")
        _wait_for(lambda: "waiting for" in waiting.stderr, "the waiting message", waiting, held)
        assert held.release() == 0, held.describe()
        assert waiting.wait() == 0, waiting.stderr
        summary = json.loads(waiting.stdout)
        assert summary["success"] is True, summary["failures"]
        assert summary["assets"]["transfer_events"]["dagster/row_count"] == 40
        if via == "run_job":
            # Runs of upi-risk take turns whole: this one came after the held one, found nothing.
            assert summary["assets"]["transfer_events"]["rows_in"] == 0
        assert instance.get_run_by_id(live_run).status == dg.DagsterRunStatus.SUCCESS
        assert "died" not in waiting.stderr
        instance.dispose()
    finally:
        held.kill()
        if waiting:
            waiting.kill()
