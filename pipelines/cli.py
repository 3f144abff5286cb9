"""The `upi-risk` command: simulate traffic, ingest the ledger, run the demo."""

import datetime as dt
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipelines.settings import DATA_DIR_ENV, DataDir

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def data_dir_option(func):
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        envvar=DATA_DIR_ENV,
        help="Data directory holding landing/, the warehouse and the rest (default: data/).",
    )(func)


def json_option(func):
    return click.option(
        "--json", "as_json", is_flag=True, help="Print a machine-readable summary."
    )(func)


@click.group()
def main() -> None:
    """UPI risk and adoption pipelines."""


def run_simulation(
    landing_dir: Path,
    truth_dir: Path,
    *,
    users: int,
    days: int,
    seed: int,
    start: dt.date,
    merchants: int | None = None,
    fraud_rate: float | None = None,
) -> dict[str, Any]:
    """Simulate UPI traffic into landing files, with a progress bar; return its summary."""
    from pipelines.sandbox.simulator import SimulationConfig, simulate

    options: dict[str, Any] = {"users": users, "days": days, "seed": seed, "start": start}
    if merchants is not None:
        options["merchants"] = merchants
    if fraud_rate is not None:
        options["fraud_rate"] = fraud_rate
    config = SimulationConfig(**options)
    with _progress() as progress:
        task = progress.add_task(f"simulating {days} days, {users:,} users", total=days)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            summary = simulate(config, landing_dir, truth_dir, progress=advance)
        except FileExistsError as exc:
            raise click.ClickException(
                f"{exc}: landed files are immutable; simulate into a new --out directory"
            ) from None
    return asdict(summary)


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Landing directory to write (default: <data-dir>/landing).",
)
@click.option(
    "--truth-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the ground truth goes, apart from the ledger (default: <data-dir>/ground_truth).",
)
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--users", type=click.IntRange(min=100), default=100_000, show_default=True)
@click.option("--merchants", type=click.IntRange(min=10), default=None, help="Default: users / 40.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First simulated day (default: --days before today, so the data is fresh).",
)
@click.option(
    "--fraud-rate",
    type=click.FloatRange(0, 0.5),
    default=None,
    help="Share of transfers that are fraud.",
)
@data_dir_option
@json_option
def simulate(out, truth_dir, days, users, merchants, seed, start, fraud_rate, data_dir, as_json):
    """Write simulated ledger-v1 landing files (transfers, accounts, labels)."""
    paths = DataDir.resolve(data_dir)
    landing_dir = out or paths.landing
    truth = truth_dir or paths.ground_truth
    first_day = start.date() if start else dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)
    summary = run_simulation(
        landing_dir,
        truth,
        users=users,
        days=days,
        seed=seed,
        start=first_day,
        merchants=merchants,
        fraud_rate=fraud_rate,
    )
    summary.update(landing_dir=str(landing_dir), truth_dir=str(truth), start=first_day.isoformat())
    _emit(summary, as_json, title="Simulation")


@main.command()
@click.option(
    "--postgres-dsn",
    envvar="UPI_RISK_LEDGER_DSN",
    default=None,
    help="Also read the Postgres ledger (tables transfers, account_events, labels).",
)
@data_dir_option
@json_option
def ingest(postgres_dsn, data_dir, as_json):
    """Ingest new ledger rows (landing files, and Postgres if a DSN is set) and run the checks."""
    import os

    if postgres_dsn:
        os.environ["UPI_RISK_LEDGER_DSN"] = postgres_dsn
    paths = DataDir.resolve(data_dir)
    summary = _run_ledger(paths)
    _print_run(summary, paths, as_json)
    sys.exit(0 if summary["success"] else 1)


@main.command()
@click.option("--users", type=click.IntRange(min=100), default=100_000, show_default=True)
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@data_dir_option
@json_option
def demo(users, days, seed, data_dir, as_json):
    """Simulate 30 days of traffic (once), then materialize everything and print a summary."""
    paths = DataDir.resolve(data_dir).ensure()
    started = time.perf_counter()
    simulated: dict[str, Any] | None = None
    if not any((paths.landing / "transfers").rglob("*.parquet")):
        first_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)
        simulated = run_simulation(
            paths.landing, paths.ground_truth, users=users, days=days, seed=seed, start=first_day
        )
    else:
        console.print(f"landing files already in {paths.landing}: not simulating again")
    summary = _run_ledger(paths)
    summary["simulation"] = simulated
    summary["seconds"] = round(time.perf_counter() - started, 1)
    _print_run(summary, paths, as_json)
    sys.exit(0 if summary["success"] else 1)


def _run_ledger(paths: DataDir) -> dict[str, Any]:
    from pipelines.runs import run_job

    with console.status("materializing the ledger assets and running their checks..."):
        result = run_job("ledger_ingest", paths)
    return asdict(result)


def _outputs(paths: DataDir) -> dict[str, str]:
    return {
        "landing": str(paths.landing),
        "warehouse": str(paths.warehouse),
        "quarantine": f"{paths.warehouse} table ledger.quarantine",
        "ground_truth": str(paths.ground_truth),
        "dagster_home": str(paths.dagster_home),
    }


def _print_run(summary: dict[str, Any], paths: DataDir, as_json: bool) -> None:
    summary["outputs"] = _outputs(paths)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    out = _stdout()
    if summary.get("simulation"):
        sim = summary["simulation"]
        out.print(
            f"Simulated {sim.get('transfers', 0):,} transfers "
            f"({sim.get('transfer_events', 0):,} ledger rows) in {sim.get('seconds', 0):.1f} s"
        )
    table = Table(title="Ledger ingestion (rows in = loaded + duplicates + quarantined)")
    for column in (
        "asset",
        "rows in",
        "loaded",
        "duplicates",
        "quarantined",
        "files rejected",
        "rows in table",
    ):
        table.add_column(column, justify="right" if column != "asset" else "left")
    for asset, meta in summary["assets"].items():
        if "rows_in" in meta:
            table.add_row(
                asset,
                f"{meta['rows_in']:,}",
                f"{meta['loaded']:,}",
                f"{meta['duplicates']:,}",
                f"{meta['quarantined']:,}",
                str(meta["files_rejected"]),
                f"{meta.get('dagster/row_count', 0):,}",
            )
        else:
            table.add_row(asset, "", "", "", "", "", f"{meta.get('dagster/row_count', 0):,}")
    out.print(table)
    checks = Table(title="Quality checks (Great Expectations)")
    for column in ("asset", "check", "result", "failed expectations"):
        checks.add_column(column)
    for check in summary["checks"]:
        failed = ", ".join(f["expectation"] for f in check["metadata"].get("failing", []))
        result = (
            "passed"
            if check["passed"]
            else ("FAILED" if check["severity"] == "ERROR" else "warning")
        )
        checks.add_row(check["asset"], check["check"], result, str(failed)[:80])
    out.print(checks)
    for line in summary["failures"]:
        out.print(f"[red]failed[/red] {line}")
    if summary["skipped"]:
        out.print(f"[yellow]skipped (blocked upstream)[/yellow]: {', '.join(summary['skipped'])}")
    # Paths are echoed plainly: rich would wrap them at the terminal width.
    click.echo("Outputs:")
    for name, where in summary["outputs"].items():
        click.echo(f"  {name:13} {where}")
    click.echo("  Dagster UI    make ui  (then http://127.0.0.1:3000)")
    if "seconds" in summary:
        click.echo(f"Done in {summary['seconds']} s, run {summary['run_id']}")


def _stdout() -> Console:
    # Piped output (CI logs, `| less`) would otherwise be cut to 80 columns.
    console = Console()
    return Console(width=max(console.width, 120))


def _emit(summary: dict[str, Any], as_json: bool, *, title: str) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    _stdout().print(table)


if __name__ == "__main__":
    main()
