"""The `upi-risk` command as a user runs it: simulate, ingest twice, JSON summaries."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def upi_risk(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(data_dir / "dagster")}
    env.pop("UPI_RISK_DATA_DIR", None)
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert not check or done.returncode == 0, f"{args} exited {done.returncode}: {done.stderr}"
    return done


def test_simulate_then_ingest_twice(tmp_path):
    data_dir = tmp_path / "instance"
    sim = upi_risk(
        "simulate", "--users", "3000", "--days", "8", "--seed", "3", "--json", data_dir=data_dir
    )
    simulated = json.loads(sim.stdout)
    assert simulated["transfers"] > 1000
    assert (data_dir / "landing" / "transfers").is_dir()
    assert (data_dir / "ground_truth").is_dir()

    first = upi_risk("ingest", "--json", data_dir=data_dir)
    summary = json.loads(first.stdout)
    assert summary["success"] is True
    events = summary["assets"]["transfer_events"]
    assert events["rows_in"] == simulated["transfer_events"]
    assert events["loaded"] + events["duplicates"] + events["quarantined"] == events["rows_in"]
    assert events["quarantined"] == 0
    assert summary["assets"]["transfers"]["dagster/row_count"] == simulated["transfers"]
    contract = {c["check"]: c["passed"] for c in summary["checks"]}
    assert contract["transfer_events_contract"] and contract["labels_contract"]
    assert summary["outputs"]["warehouse"] == str(data_dir.resolve() / "warehouse.duckdb")

    second = json.loads(upi_risk("ingest", "--json", data_dir=data_dir).stdout)
    again = second["assets"]["transfer_events"]
    assert (again["rows_in"], again["loaded"]) == (0, 0)
    assert again["dagster/row_count"] == events["dagster/row_count"]

    # The human summary names the counts and where the outputs are, and the files it skipped.
    (data_dir / "landing" / "transfers" / "export.csv").write_text("transfer_id\n")
    text = upi_risk("ingest", data_dir=data_dir).stdout
    assert "Ledger ingestion" in text and "warehouse.duckdb" in text
    assert "skipped 1 file(s) that are not Parquet or NDJSON" in text
    assert "transfers/export.csv" in text

    # Adoption on the ingested ledger (no risk scores yet: every transfer is unscored).
    adoption = json.loads(upi_risk("adoption", "--json", data_dir=data_dir).stdout)
    assert adoption["success"] is True and adoption["marts"]["daily_volume"] > 0
    pages = {name: Path(path) for name, path in adoption["dashboards"].items()}
    assert set(pages) == {"overview", "geography", "merchants", "cohorts", "funnel", "risk"}
    assert all(
        path.is_file() and path.parent == data_dir.resolve() / "reports" / "dashboards"
        for path in pages.values()
    )
    reversed_range = upi_risk(
        "adoption",
        "--since",
        "2026-03-05",
        "--until",
        "2026-03-01",
        data_dir=data_dir,
        check=False,
    )
    assert reversed_range.returncode == 2
    assert "--until 2026-03-01 is before --since 2026-03-05" in reversed_range.stderr
    assert "Traceback" not in reversed_range.stderr


def test_bad_input_gives_a_clear_error(tmp_path):
    result = upi_risk("simulate", "--days", "0", data_dir=tmp_path, check=False)
    assert result.returncode == 2
    assert "--days" in result.stderr
    upi_risk("simulate", "--users", "200", "--days", "2", data_dir=tmp_path)
    again = upi_risk("simulate", "--users", "200", "--days", "2", data_dir=tmp_path, check=False)
    assert again.returncode == 1
    assert "already holds parquet files" in again.stderr and "Traceback" not in again.stderr


def test_a_mistyped_data_dir_is_refused_not_created(tmp_path):
    typo = tmp_path / "instnace"
    for command in ("ingest", "adoption"):
        done = upi_risk(command, data_dir=typo, check=False)
        assert done.returncode == 2, done.stderr
        assert f"{typo} is not an upi-risk instance" in done.stderr
        assert "Traceback" not in done.stderr
    assert not typo.exists()
    made = upi_risk("simulate", "--users", "200", "--days", "1", "--json", data_dir=typo)
    assert f"creating a new instance in {typo}" in made.stderr
    assert json.loads(made.stdout)["transfers"] > 0


@pytest.fixture(scope="module")
def small_instance(tmp_path_factory) -> Path:
    """An instance with a few days of simulated landing files, ingested once."""
    data_dir = tmp_path_factory.mktemp("cli") / "instance"
    upi_risk("simulate", "--users", "500", "--days", "3", "--seed", "2", data_dir=data_dir)
    upi_risk("ingest", data_dir=data_dir)
    return data_dir


def test_cli_runs_are_listed_on_their_job_page(small_instance):
    """The UI lists a job's runs by job name and code-location label (`RunsFilter` with the
    repository label tag); a run executed without an origin is found by neither."""
    import dagster as dg
    from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

    from pipelines.runs import CODE_LOCATION, repository_label

    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert f'code_location_name = "{CODE_LOCATION}"' in pyproject  # the location `dg dev` serves
    instance = dg.DagsterInstance.from_config(str(small_instance / "dagster"))
    on_page = instance.get_runs(
        dg.RunsFilter(job_name="ledger_ingest", tags={REPOSITORY_LABEL_TAG: repository_label()})
    )
    assert len(on_page) == 1
    origin = on_page[0].remote_job_origin
    assert origin is not None and origin.location_name == CODE_LOCATION
    assert origin.job_name == "ledger_ingest"


def test_known_failures_print_one_line_and_keep_the_trace(small_instance):
    import dagster as dg
    import duckdb

    # A notebook holds the warehouse open for writing.
    holder = duckdb.connect(str(small_instance / "warehouse.duckdb"))
    try:
        locked = upi_risk("ingest", data_dir=small_instance, check=False)
    finally:
        holder.close()
    assert locked.returncode == 1
    errors = [line for line in locked.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: the warehouse {small_instance.resolve() / 'warehouse.duckdb'} is in use by "
        "another process (a notebook or another program holds it open for writing): close it, "
        "then run again"
    ]
    assert "Traceback" not in locked.stderr and len(locked.stderr.splitlines()) < 5
    # The whole trace is in the failed run's log, for the UI.
    instance = dg.DagsterInstance.from_config(str(small_instance / "dagster"))
    failed = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    traces = [
        record.dagster_event.step_failure_data.error
        for record in instance.all_logs(failed[0].run_id)
        if record.dagster_event and record.dagster_event.is_step_failure
    ]
    assert traces and any("Could not set lock" in str(t.to_string()) for t in traces)

    # An unreachable Postgres ledger: named by host and port, never with its password.
    unreachable = upi_risk(
        "ingest",
        "--postgres-dsn",
        "postgresql://risk:s3cret@127.0.0.1:1/ledger?connect_timeout=2",
        data_dir=small_instance,
        check=False,
    )
    assert unreachable.returncode == 1
    assert "error: cannot reach the Postgres ledger (127.0.0.1:1)" in unreachable.stderr
    assert "s3cret" not in unreachable.stderr + unreachable.stdout
    assert "Traceback" not in unreachable.stderr

    # No ledger files at all.
    empty = small_instance.parent / "empty"
    (empty / "landing").mkdir(parents=True)
    nothing = upi_risk("ingest", data_dir=empty, check=False)
    assert nothing.returncode == 1
    assert f"no ledger files in {empty.resolve() / 'landing'}" in nothing.stderr
    assert "Traceback" not in nothing.stderr


def test_a_bad_setting_is_named_in_one_line(tmp_path):
    (tmp_path / "landing").mkdir()
    (tmp_path / "settings.toml").write_text("test_days = 0\nreview_capcity = 50\n")
    done = upi_risk("ingest", data_dir=tmp_path, check=False)
    assert done.returncode == 2
    assert "unknown settings ['review_capcity']" in done.stderr
    assert "Traceback" not in done.stderr
    (tmp_path / "settings.toml").write_text("test_days = 0\n")
    done = upi_risk("ingest", data_dir=tmp_path, check=False)
    assert done.returncode == 2 and "test_days: Input should be greater than 0" in done.stderr
