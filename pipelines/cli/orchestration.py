"""What the commands run: the simulator with a progress bar, and the Dagster jobs in turn."""

import datetime as dt
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from pipelines.cli.render import console, progress_bar
from pipelines.settings import Settings

# 30 days of history: labels need days, not the production month, to mature. Written to the
# demo instance's settings.toml, where the daily jobs read them too.
DEMO_SETTINGS = {"test_days": 7, "delay_days": 3, "folds": 2, "maturity_days": 7}


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
    with progress_bar() as progress:
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


def run_risk(settings: Settings) -> dict[str, Any]:
    """Train (behind the promotion gate), then score and deliver: to the configured transfer
    service, else to a reference transfer service started for the purpose."""
    from pipelines.runs import run_job
    from pipelines.sandbox.transfer_service import ReferenceTransferService

    with console.status("training the risk model and evaluating it against the baseline..."):
        training = asdict(run_job("risk_training", settings))
    with ReferenceTransferService(host="127.0.0.1", port=0) as service:
        url = settings.transfer_service_url or service.url
        with console.status(f"scoring, deciding, delivering to {url}..."):
            scoring = asdict(
                run_job("risk_scoring", settings.model_copy(update={"transfer_service_url": url}))
            )
        service_state = {"url": url, "decisions_in_effect": service.effect_count}
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


def run_adoption(
    settings: Settings, since: dt.date | None = None, until: dt.date | None = None
) -> dict[str, Any]:
    """Build the adoption marts for the ledger's days (or a range), then the dashboards."""
    from pipelines.adoption.marts import ledger_days
    from pipelines.defs.ledger.partitions import partition_range_tags
    from pipelines.runs import run_job
    from pipelines.warehouse import warehouse

    with warehouse(settings.paths.warehouse, read_only=True) as con:
        covered = ledger_days(con)
    if covered is None:
        return {"success": False, "failures": ["the ledger has no transfers yet: nothing to build"]}
    # The marts' partitions are the ledger's days: a range beyond them is cut to them.
    first = max(since or covered.first, covered.first)
    last = min(until or covered.last, covered.last)
    if first > last:
        return {
            "success": False,
            "failures": [
                f"the ledger holds no day from {since} to {until} "
                f"(it covers {covered.first} to {covered.last})"
            ],
        }
    with console.status(f"building the adoption marts for {first} to {last}..."):
        marts = run_job("adoption_marts", settings, tags=partition_range_tags(first, last))
    reports = None
    if marts.success:
        with console.status("writing the adoption dashboards..."):
            reports = run_job("adoption_reports", settings)
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
        # What failed in the runs is said from their errors (cli.failures), one line each.
        "failures": [],
        "runs": [asdict(marts)] + ([asdict(reports)] if reports else []),
    }


def run_ledger(settings: Settings) -> dict[str, Any]:
    """Ingest what is new in the ledger and run the quality checks."""
    from pipelines.runs import run_job

    with console.status("materializing the ledger assets and running their checks..."):
        result = run_job("ledger_ingest", settings)
    return asdict(result)


LIVE_HOURS = 4.0  # the demo's last hours, paid through the decision service


def live_dir(settings: Settings) -> Path:
    """Where the demo keeps the live hours it held back from the landing files."""
    return settings.paths.root / "live"


def run_online(settings: Settings) -> dict[str, Any]:
    """Start `upi-risk serve` on the instance, pay the held-back live hours through it as the
    reference payments flow (ask, then settle, hold or decline), stop it; then ingest what the
    live hours landed and load the online decisions into the warehouse."""
    import contextlib
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from pipelines.runs import run_job
    from pipelines.sandbox.live_traffic import pay_live_traffic

    live = live_dir(settings)
    if not (live / "transfers.parquet").exists():
        return {"success": True, "skipped": f"no live hours held back in {live}"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log_path = settings.paths.root / "serve.log"
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--data-dir"]
    command += [str(settings.paths.root), "--port", str(port)]
    with log_path.open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
        try:
            with console.status(f"starting the decision service on {url}..."):
                started = time.perf_counter()
                while True:
                    if server.poll() is not None:
                        return {
                            "success": False,
                            "failures": [f"upi-risk serve exited: see {log_path}"],
                        }
                    with contextlib.suppress(httpx.HTTPError):
                        if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                            break
                    time.sleep(0.5)
                ready_s = time.perf_counter() - started
            with console.status(f"paying the last {LIVE_HOURS:g} hours through {url}..."):
                report = pay_live_traffic(live, settings.paths.landing, url)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
    ledger = run_ledger(settings)
    with console.status("loading the online decisions into the warehouse..."):
        scoring = asdict(run_job("risk_scoring", settings))
    return {
        "success": ledger["success"] and scoring["success"],
        "service_ready_seconds": round(ready_s, 1),
        "live": report.as_dict(),
        "online_decisions": scoring["assets"].get("online_decisions", {}),
        "parity": next((c for c in scoring["checks"] if c["check"] == "online_batch_parity"), None),
        "runs": [ledger, scoring],
    }
