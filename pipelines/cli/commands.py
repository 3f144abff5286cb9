"""The `upi-risk` commands: simulate traffic, ingest the ledger, run the demo, backtest.

Every command builds the instance's one `Settings` from its options, the `UPI_RISK_*`
environment and the data directory's settings.toml, and hands it to what it runs.
"""

import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from pipelines.cli.failures import explain_exception, one_line_failures, settings_error
from pipelines.cli.orchestration import (
    DEMO_SETTINGS,
    LIVE_HOURS,
    live_dir,
    run_adoption,
    run_ledger,
    run_online,
    run_risk,
    run_simulation,
)
from pipelines.cli.render import (
    console,
    emit,
    pl_config,
    print_adoption,
    print_run,
    stdout_console,
)
from pipelines.ledger.landing import discover
from pipelines.sandbox.live_traffic import hold_back
from pipelines.settings import DATA_DIR_ENV, Settings, write_settings_file


def data_dir_option(func):
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"Data directory holding landing/, the warehouse and the rest "
        f"(default: ${DATA_DIR_ENV}, else data/).",
    )(func)


_SETTINGS_KEY = "upi_risk.settings"


class _Refused(click.ClickException):
    """A command refused before it ran (bad settings, no instance): one line, exit status 2."""

    exit_code = 2


def _settings(data_dir: Path | None, **options: Any) -> Settings:
    """The settings of the instance a command works on: its options (those given) first."""
    given = {name: value for name, value in options.items() if value is not None}
    if data_dir is not None:
        given["data_dir"] = data_dir
    try:
        settings = Settings(**given)
    except (ValidationError, ValueError) as exc:
        raise _Refused(settings_error(exc)) from None
    # For the group's handler of known failures, which names the instance's paths.
    click.get_current_context().meta[_SETTINGS_KEY] = settings
    return settings


def _instance(data_dir: Path | None, **options: Any) -> Settings:
    """The instance a reading command works on; a directory that is none is refused, so that a
    mistyped --data-dir does not quietly start an empty instance."""
    settings = _settings(data_dir, **options)
    paths = settings.paths
    if not paths.is_instance():
        raise _Refused(
            f"{paths.root} is not an upi-risk instance (no landing/, warehouse.duckdb or "
            "dagster/ in it): check --data-dir, or make one with `upi-risk demo` or "
            f"`upi-risk simulate --data-dir {paths.root}`"
        )
    return settings


def _new_instance(data_dir: Path | None) -> Settings:
    """The instance a making command writes; says so when it creates one."""
    settings = _settings(data_dir)
    if not settings.paths.is_instance():
        click.echo(f"creating a new instance in {settings.paths.root}", err=True)
    return settings


def _default(setting: str) -> str:
    """How --help shows an option that overrides a setting."""
    return f"setting {setting}, {Settings.model_fields[setting].default}"


def json_option(func):
    return click.option(
        "--json", "as_json", is_flag=True, help="Print a machine-readable summary."
    )(func)


class _Commands(click.Group):
    """The group; a command stopped by a signal while it waited for another run exits 128 + N."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as failed:
            settings = ctx.meta.get(_SETTINGS_KEY)
            line = explain_exception(failed, settings) if settings is not None else None
            if line is None:
                raise
            click.echo(f"error: {line}", err=True)
            raise click.exceptions.Exit(1) from None
        except KeyboardInterrupt as stopped:
            runs = sys.modules.get("pipelines.runs")  # not imported: not waiting for a run
            if runs is None or not isinstance(stopped, runs.RunWaitInterrupted):
                raise
            click.echo(stopped.message, err=True)
            raise click.exceptions.Exit(128 + stopped.signum) from None


@click.group(cls=_Commands)
def main() -> None:
    """UPI risk and adoption pipelines."""


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
    paths = _new_instance(data_dir).paths
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
    emit(summary, as_json, title="Simulation")


@main.command()
@click.option(
    "--postgres-dsn",
    default=None,
    help="Also read the Postgres ledger (tables transfers, account_events, labels).",
)
@data_dir_option
@json_option
def ingest(postgres_dsn, data_dir, as_json):
    """Ingest new ledger rows (landing files, and Postgres if a DSN is set) and run the checks."""
    settings = _instance(data_dir, ledger_dsn=postgres_dsn)
    if settings.ledger_dsn is None and not discover(settings.paths.landing):
        raise click.ClickException(
            f"no ledger files in {settings.paths.landing}: land ledger-v1 files under its "
            "transfers/, accounts/ and labels/ folders, or give --postgres-dsn"
        )
    summary = run_ledger(settings)
    _finish(summary, settings, as_json)


@main.command()
@click.option("--users", type=click.IntRange(min=100), default=100_000, show_default=True)
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@data_dir_option
@json_option
def demo(users, days, seed, data_dir, as_json):
    """Simulate 30 days of traffic (once), then materialize everything and print a summary."""
    settings = _new_instance(data_dir)
    paths = settings.paths.ensure()
    started = time.perf_counter()
    simulated: dict[str, Any] | None = None
    if not any((paths.landing / "transfers").rglob("*.parquet")):
        first_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)
        simulated = run_simulation(
            paths.landing, paths.ground_truth, users=users, days=days, seed=seed, start=first_day
        )
        # The last hours wait, so that they can be paid through the decision service.
        simulated["held_back"] = hold_back(paths.landing, live_dir(settings), hours=LIVE_HOURS)
    else:
        console.print(f"landing files already in {paths.landing}: not simulating again")
    if not paths.settings_file.exists():
        write_settings_file(paths, DEMO_SETTINGS)
        settings = _settings(data_dir)  # now with the demo's windows
    summary = run_ledger(settings)
    summary["simulation"] = simulated
    if summary["success"]:
        summary["risk"] = run_risk(settings)
        if summary["risk"]["success"]:
            summary["online"] = run_online(settings)
        # Adoption needs only the ledger: the marts mark transfers unscored if risk failed.
        summary["adoption"] = run_adoption(settings)
        summary["success"] = (
            summary["risk"]["success"]
            and summary.get("online", {}).get("success", False)
            and summary["adoption"]["success"]
        )
    summary["seconds"] = round(time.perf_counter() - started, 1)
    _finish(summary, settings, as_json)


def _finish(summary: dict[str, Any], settings: Settings, as_json: bool) -> None:
    """Print a run's summary and exit: 0 if it succeeded; else 1, after one line per failure
    whose cause is known (the full traces stay in the runs' logs in the Dagster UI)."""
    print_run(summary, settings.paths, as_json)
    if not summary["success"] and not as_json:
        for line in one_line_failures(summary, settings):
            click.echo(f"error: {line}", err=True)
    sys.exit(0 if summary["success"] else 1)


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
    settings = _instance(data_dir)
    paths = settings.paths
    if not paths.warehouse.exists():
        raise click.ClickException(
            f"no warehouse at {paths.warehouse}: run `upi-risk ingest` first"
        )
    if since and until and until < since:
        raise click.BadParameter(
            f"--until {until.date()} is before --since {since.date()}", param_hint="--until"
        )
    result = run_adoption(
        settings, since.date() if since else None, until.date() if until else None
    )
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        print_adoption(stdout_console(), result)
        for line in one_line_failures(result, settings):
            click.echo(f"error: {line}", err=True)
    sys.exit(0 if result["success"] else 1)


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
@click.option(
    "--test-days", type=click.IntRange(min=1), default=None, show_default=_default("test_days")
)
@click.option(
    "--delay-days",
    type=click.IntRange(min=0),
    default=None,
    show_default=_default("delay_days"),
    help="Gap between training and test, for labels to arrive.",
)
@click.option(
    "--folds",
    type=click.IntRange(min=1),
    default=None,
    show_default=_default("folds"),
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
    default=None,
    show_default=_default("maturity_days"),
    help="An unlabelled transfer counts as legitimate once this old.",
)
@click.option(
    "--truth",
    "truth_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Optional ground truth (simulator) to score against.",
)
@click.option(
    "--protocol",
    type=click.Choice(["labels-known-now", "delayed-labels"]),
    default="labels-known-now",
    show_default=True,
    help="labels-known-now: every test transfer, judged with the labels known now; "
    "delayed-labels: the published protocol (Fraud Detection Handbook): training labels as "
    "known after the delay, each test day drops payers already known as compromised, daily "
    "card precision@k.",
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
    protocol,
    as_json,
):
    """Backtest the risk model against the logistic baseline on any ledger directory."""
    from pipelines.risk.backtest import run_backtest

    with console.status("backtesting...") as status:
        try:
            result = run_backtest(
                ledger_dir,
                out_dir,
                # The output directory is the backtest's instance: a settings.toml there applies.
                settings=_settings(
                    out_dir,
                    test_days=test_days,
                    delay_days=delay_days,
                    folds=folds,
                    maturity_days=maturity_days,
                ),
                test_start=test_start.date() if test_start else None,
                train_days=train_days,
                truth_path=truth_path,
                protocol=protocol,
                progress=lambda message: status.update(message),
            )
        except (FileNotFoundError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result["metrics"], indent=2, default=str))
        return
    click.echo(f"protocol: {protocol}")
    with pl_config():
        click.echo(result["table"])
    click.echo(result["folds"])  # how many folds the means are over, and why any was skipped
    click.echo(f"metrics: {Path(result['out_dir']) / 'metrics.json'}")
    click.echo(f"scores:  {Path(result['out_dir']) / 'scores.parquet'}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option(
    "--state-backend",
    type=click.Choice(["embedded", "redis"]),
    default=None,
    help=f"Where the online feature state lives ({_default('state_backend')}); redis needs "
    "UPI_RISK_REDIS_URL.",
)
@data_dir_option
def serve(host, port, state_backend, data_dir):
    """Serve real-time decisions (POST /v1/decisions) until stopped.

    The feature state is restored from its snapshot and log (or built from the warehouse when
    empty), transfers decided before a crash are put back into it, and the live model is
    swapped in whenever the registry promotes a new one. SIGINT or SIGTERM stop it cleanly:
    requests in flight finish and the state is snapshotted. One process per embedded state;
    several replicas share a redis state.
    """
    from pipelines.serving.runtime import run_server

    settings = _instance(data_dir, state_backend=state_backend)
    run_server(settings, host=host, port=port, announce=lambda line: click.echo(line, err=True))
