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
        help=f"Data directory holding landing/, the warehouse and the rest "
        f"(default: ${DATA_DIR_ENV}, else data/).",
    )(func)


def _instance(data_dir: Path | None) -> DataDir:
    """The instance a reading command works on; a directory that is none is refused, so that a
    mistyped --data-dir does not quietly start an empty instance."""
    paths = DataDir.resolve(data_dir)
    if not paths.is_instance():
        raise click.UsageError(
            f"{paths.root} is not an upi-risk instance (no landing/, warehouse.duckdb or "
            "dagster/ in it): check --data-dir, or make one with `upi-risk demo` or "
            f"`upi-risk simulate --data-dir {paths.root}`"
        )
    return paths


def _new_instance(data_dir: Path | None) -> DataDir:
    """The instance a making command writes; says so when it creates one."""
    paths = DataDir.resolve(data_dir)
    if not paths.is_instance():
        click.echo(f"creating a new instance in {paths.root}", err=True)
    return paths


def json_option(func):
    return click.option(
        "--json", "as_json", is_flag=True, help="Print a machine-readable summary."
    )(func)


class _Commands(click.Group):
    """The group; a command stopped by a signal while it waited for another run exits 128 + N."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as stopped:
            runs = sys.modules.get("pipelines.runs")  # not imported: not waiting for a run
            if runs is None or not isinstance(stopped, runs.RunWaitInterrupted):
                raise
            click.echo(stopped.message, err=True)
            raise click.exceptions.Exit(128 + stopped.signum) from None


@click.group(cls=_Commands)
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
    paths = _new_instance(data_dir)
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
    paths = _instance(data_dir)
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
    paths = _new_instance(data_dir).ensure()
    started = time.perf_counter()
    simulated: dict[str, Any] | None = None
    if not any((paths.landing / "transfers").rglob("*.parquet")):
        first_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)
        simulated = run_simulation(
            paths.landing, paths.ground_truth, users=users, days=days, seed=seed, start=first_day
        )
    else:
        console.print(f"landing files already in {paths.landing}: not simulating again")
    if not paths.risk_settings.exists():
        # 30 days of history: labels need days, not the production month, to mature.
        paths.risk_settings.write_text(json.dumps(DEMO_RISK_SETTINGS, indent=2) + "\n")
    summary = _run_ledger(paths)
    summary["simulation"] = simulated
    if summary["success"]:
        summary["risk"] = _run_risk(paths)
        # Adoption needs only the ledger: the marts mark transfers unscored if risk failed.
        summary["adoption"] = _run_adoption(paths)
        summary["success"] = summary["risk"]["success"] and summary["adoption"]["success"]
    summary["seconds"] = round(time.perf_counter() - started, 1)
    _print_run(summary, paths, as_json)
    sys.exit(0 if summary["success"] else 1)


DEMO_RISK_SETTINGS = {"test_days": 7, "delay_days": 3, "folds": 2, "maturity_days": 7}


def _run_risk(paths: DataDir) -> dict[str, Any]:
    """Train (behind the promotion gate), then score and deliver to a reference transfer service."""
    import os

    from pipelines.runs import run_job
    from pipelines.sandbox.transfer_service import ReferenceTransferService

    with console.status("training the risk model and evaluating it against the baseline..."):
        training = asdict(run_job("risk_training", paths))
    with ReferenceTransferService(host="127.0.0.1", port=0) as service:
        os.environ.setdefault("UPI_RISK_TRANSFER_SERVICE_URL", service.url)
        with console.status(f"scoring, deciding, delivering to {service.url}..."):
            scoring = asdict(run_job("risk_scoring", paths))
        service_state = {"url": service.url, "decisions_in_effect": service.effect_count}
    # A candidate the gate keeps as a challenger fails the blocking check, and so the run: that
    # is the gate working, not the job failing.
    gated = bool(training["failures"]) and all(
        "risk_model_beats_live" in failure for failure in training["failures"]
    )
    return {
        "success": (training["success"] or gated) and scoring["success"],
        "training": training,
        "scoring": scoring,
        "transfer_service": service_state,
    }


def _run_adoption(
    paths: DataDir, since: dt.date | None = None, until: dt.date | None = None
) -> dict[str, Any]:
    """Build the adoption marts for the ledger's days (or a range), then the dashboards."""
    from pipelines.adoption.marts import ledger_days
    from pipelines.defs.adoption.jobs import partition_range_tags
    from pipelines.runs import run_job
    from pipelines.warehouse import warehouse

    with warehouse(paths.warehouse, read_only=True) as con:
        covered = ledger_days(con)
    if covered is None and (since is None or until is None):
        return {"success": False, "failures": ["the ledger has no transfers yet: nothing to build"]}
    first = since or covered.first
    last = until or covered.last
    with console.status(f"building the adoption marts for {first} to {last}..."):
        marts = run_job("adoption_marts", paths, tags=partition_range_tags(first, last))
    reports = None
    if marts.success:
        with console.status("writing the adoption dashboards..."):
            reports = run_job("adoption_reports", paths)
    pages = (reports.assets.get("adoption_dashboards", {}) if reports else {}) or {}
    return {
        "success": marts.success and reports is not None and reports.success,
        "first_day": str(first),
        "last_day": str(last),
        "marts": {name: meta.get("rows_written") for name, meta in marts.assets.items()},
        "dashboards": {
            key.removeprefix("page_"): value
            for key, value in pages.items()
            if key.startswith("page_")
        },
        "failures": marts.failures + (reports.failures if reports else []),
    }


@main.command()
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First India (IST) day to build (default: the ledger's first day).",
)
@click.option(
    "--until",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Last IST day to build (default: the ledger's last day).",
)
@data_dir_option
@json_option
def adoption(since, until, data_dir, as_json):
    """Build the adoption marts for a range of days and write the dashboards."""
    paths = _instance(data_dir)
    if not paths.warehouse.exists():
        raise click.ClickException(
            f"no warehouse at {paths.warehouse}: run `upi-risk ingest` first"
        )
    if since and until and until < since:
        raise click.BadParameter(
            f"--until {until.date()} is before --since {since.date()}", param_hint="--until"
        )
    result = _run_adoption(paths, since.date() if since else None, until.date() if until else None)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        _print_adoption(_stdout(), result)
    sys.exit(0 if result["success"] else 1)


def _print_adoption(out: Console, adoption: dict[str, Any]) -> None:
    for line in adoption.get("failures", []):
        out.print(f"[red]failed[/red] {line}")
    if adoption.get("marts"):
        rows = ", ".join(f"{name} {n:,}" for name, n in adoption["marts"].items() if n is not None)
        out.print(
            f"[bold]Adoption marts[/bold] {adoption['first_day']} to {adoption['last_day']} "
            f"(rows written): {rows}"
        )
    if adoption.get("dashboards"):
        # Paths are echoed plainly: rich would wrap them at the terminal width.
        click.echo("Dashboards (open from disk, no network needed):")
        for name, path in adoption["dashboards"].items():
            click.echo(f"  {name:13} {path}")


@main.command()
@click.option(
    "--ledger",
    "ledger_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A ledger-v1 landing directory (transfers/, accounts/, labels/).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where metrics.json, scores.parquet and the backtest's warehouse go.",
)
@click.option(
    "--test-start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First day of the latest test window (default: the latest window whose "
    "labels had --delay-days to arrive).",
)
@click.option("--test-days", type=click.IntRange(min=1), default=7, show_default=True)
@click.option(
    "--delay-days",
    type=click.IntRange(min=0),
    default=7,
    show_default=True,
    help="Gap between training and test, for labels to arrive.",
)
@click.option(
    "--folds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Test windows, stepping back from --test-start.",
)
@click.option(
    "--train-days",
    type=click.IntRange(min=1),
    default=None,
    help="Training window length (default: all history before the gap).",
)
@click.option(
    "--maturity-days",
    type=click.IntRange(min=0),
    default=30,
    show_default=True,
    help="An unlabelled transfer counts as legitimate once this old.",
)
@click.option(
    "--truth",
    "truth_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Optional ground truth (simulator) to score against.",
)
@json_option
def backtest(
    ledger_dir,
    out_dir,
    test_start,
    test_days,
    delay_days,
    folds,
    train_days,
    maturity_days,
    truth_path,
    as_json,
):
    """Backtest the risk model against the logistic baseline on any ledger directory."""
    from pipelines.risk.backtest import run_backtest

    with console.status("backtesting...") as status:
        try:
            result = run_backtest(
                ledger_dir,
                out_dir,
                test_start=test_start.date() if test_start else None,
                test_days=test_days,
                delay_days=delay_days,
                folds=folds,
                train_days=train_days,
                maturity_days=maturity_days,
                truth_path=truth_path,
                progress=lambda message: status.update(message),
            )
        except (FileNotFoundError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result["metrics"], indent=2, default=str))
        return
    with pl_config():
        click.echo(result["table"])
    click.echo(f"metrics: {Path(result['out_dir']) / 'metrics.json'}")
    click.echo(f"scores:  {Path(result['out_dir']) / 'scores.parquet'}")


def pl_config():
    import polars as pl

    return pl.Config(tbl_rows=50, tbl_cols=20, tbl_width_chars=160, tbl_hide_dataframe_shape=True)


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
        "models": str(paths.models),
        "decision_outbox": str(paths.operational_db),
        "dashboards": str(paths.dashboards),
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
    for asset, meta in summary["assets"].items():
        ignored = meta.get("files_ignored") or []
        if ignored:
            names = ", ".join(ignored[:5]) + (
                f" and {len(ignored) - 5} more" if len(ignored) > 5 else ""
            )
            # Echoed plainly: rich would wrap the file names at the terminal width.
            click.echo(
                f"{asset}: skipped {len(ignored)} file(s) that are not Parquet or NDJSON: {names}"
            )
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
    if summary.get("risk"):
        _print_risk(out, summary["risk"])
    if summary.get("adoption"):
        _print_adoption(out, summary["adoption"])
    # Paths are echoed plainly: rich would wrap them at the terminal width.
    click.echo("Outputs:")
    for name, where in summary["outputs"].items():
        click.echo(f"  {name:13} {where}")
    click.echo("  Dagster UI    make ui  (then http://127.0.0.1:3000)")
    if "seconds" in summary:
        click.echo(f"Done in {summary['seconds']} s, run {summary['run_id']}")


def _print_risk(out: Console, risk: dict[str, Any]) -> None:
    from rich.markdown import Markdown

    model = risk["training"]["assets"].get("risk_model", {})
    if model:
        out.print(
            f"[bold]Risk model[/bold] candidate {model['version']} vs logistic baseline, "
            "mean over prequential folds (test windows judged by ground truth when present):"
        )
        out.print(Markdown(model["evaluation"]))
        if model.get("folds"):
            click.echo(model["folds"])
    for check in risk["training"]["checks"]:
        reason = check["metadata"].get("reason", "")
        verdict = (
            "unchanged"
            if "already live" in reason
            else ("promoted" if check["passed"] else "kept as challenger")
        )
        out.print(f"Promotion gate: {verdict}: {reason}")
    scores = risk["scoring"]["assets"].get("transfer_scores", {})
    if scores:
        out.print(
            f"Scored with live model {scores['live_model']}, policy {scores['policy']} "
            f"(hold threshold {scores['hold_threshold']:.4f}):"
        )
        out.print(Markdown(scores["decisions"]))
    delivery = risk["scoring"]["assets"].get("decision_delivery", {})
    if delivery:
        service = risk["transfer_service"]
        out.print(
            f"Delivered {delivery.get('delivered', 0):,} decisions to the reference transfer service "
            f"({delivery.get('decisions_per_second', 0)}/s; 409: {delivery.get('final_409', 0)}, "
            f"dead letters: {delivery.get('dead', 0)}, still pending: {delivery.get('pending', 0)}); "
            f"the service holds {service['decisions_in_effect']:,} decisions in effect."
        )
    for line in risk["training"]["failures"] + risk["scoring"]["failures"]:
        out.print(f"[red]failed[/red] {line}")


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
