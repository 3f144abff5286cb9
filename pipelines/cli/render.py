"""What the `upi-risk` commands print: run summaries, tables, progress."""

import json
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipelines.settings import DataDir

console = Console(stderr=True)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def print_adoption(out: Console, adoption: dict[str, Any]) -> None:
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


def pl_config():
    import polars as pl

    return pl.Config(tbl_rows=50, tbl_cols=20, tbl_width_chars=160, tbl_hide_dataframe_shape=True)


def run_outputs(paths: DataDir) -> dict[str, str]:
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


def print_run(summary: dict[str, Any], paths: DataDir, as_json: bool) -> None:
    summary["outputs"] = run_outputs(paths)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    out = stdout_console()
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
    # Failed steps are not listed here: the command ends with one line per failure's cause.
    if summary["skipped"]:
        out.print(f"[yellow]skipped (blocked upstream)[/yellow]: {', '.join(summary['skipped'])}")
    if summary.get("risk"):
        print_risk(out, summary["risk"])
    if summary.get("online"):
        print_online(out, summary["online"])
    if summary.get("adoption"):
        print_adoption(out, summary["adoption"])
    # Paths are echoed plainly: rich would wrap them at the terminal width.
    click.echo("Outputs:")
    for name, where in summary["outputs"].items():
        click.echo(f"  {name:13} {where}")
    click.echo("  Dagster UI    make ui  (then http://127.0.0.1:3000)")
    if "seconds" in summary:
        click.echo(f"Done in {summary['seconds']} s, run {summary['run_id']}")


def print_risk(out: Console, risk: dict[str, Any]) -> None:
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


def print_online(out: Console, online: dict[str, Any]) -> None:
    """The live hours the reference payments flow paid through `upi-risk serve`."""
    live = online.get("live")
    if not live:
        if online.get("skipped"):
            out.print(f"Online decisions: skipped ({online['skipped']})")
        return
    decisions = ", ".join(f"{n:,} {d}" for d, n in sorted(live["decisions"].items()))
    out.print(
        f"[bold]Online decisions[/bold] (asked before each payment, the service ready in "
        f"{online['service_ready_seconds']} s): {live['transfers']:,} transfers of the last "
        f"hours, {decisions}; latency seen by the app p50 {live['latency_ms_p50']} ms, p99 "
        f"{live['latency_ms_p99']} ms, slowest {live['latency_ms_max']} ms; fallbacks: "
        f"{live['model_unavailable']} by the service (MODEL_UNAVAILABLE), "
        f"{live['client_fallbacks']} by the app (no answer in time); "
        f"{live['outcomes_sent']:,} outcomes, {live['account_events_sent']:,} account events "
        f"and {live['labels_sent']:,} labels posted back."
    )
    parity = online.get("parity")
    if parity:
        meta = parity["metadata"]
        share = meta.get("share_matching")
        verdict = "passed" if parity["passed"] else "WARNING: below 99.9%"
        out.print(
            f"Online/batch parity: {meta.get('sampled', 0):,} online decisions recomputed in "
            + (
                f"batch, {share:.2%} match in features and decision ({verdict})"
                if share is not None
                else "batch: none with batch features yet"
            )
        )


def stdout_console() -> Console:
    # Piped output (CI logs, `| less`) would otherwise be cut to 80 columns.
    console = Console()
    return Console(width=max(console.width, 120))


def emit(summary: dict[str, Any], as_json: bool, *, title: str) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    stdout_console().print(table)
