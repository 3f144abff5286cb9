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
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        check=check,
        timeout=600,
    )


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
