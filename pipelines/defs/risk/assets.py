"""Risk assets: features, the model and its promotion gate, scores and decisions, delivery."""

import base64
import json
from pathlib import Path

import dagster as dg
import polars as pl

from pipelines.decisions.delivery import deliver_until_drained
from pipelines.decisions.outbox import enqueue, operational_engine, status_counts
from pipelines.defs.ledger.assets import accounts, labels, rows_version, transfers
from pipelines.defs.metadata import markdown_table
from pipelines.defs.resources import WAREHOUSE_POOL, RiskResource, WarehouseResource
from pipelines.features.definitions import FEATURES
from pipelines.features.table import (
    CATALOGUE_VERSION,
    read_features,
    refresh_feature_table_in_job_process,
)
from pipelines.settings import Settings
from pipelines.warehouse import FEATURE_TABLE, SCORES_TABLE

# Training, evaluation and scoring pull scikit-learn and SciPy: they are imported inside the
# asset bodies, because definitions load in every run process and in the UI.

GROUP = "risk"


@dg.asset(
    group_name=GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "polars"},
    deps=[transfers, accounts, labels],
)
def transfer_features(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Point-in-time features of every transfer, computed once as of its arrival."""
    # In a process of its own, started with the engine's memory settings (features/engine).
    result = refresh_feature_table_in_job_process(Path(warehouse.path))
    catalogue = pl.DataFrame(
        [(f.name, f.group, f.meaning) for f in FEATURES],
        schema=["feature", "group", "meaning"],
        orient="row",
    )
    # Features are computed once per transfer and never change: the row count (and the
    # catalogue) is the version, and a run that computes none leaves the model trained on them
    # in sync; a new catalogue (the table computed again) leaves it out of date.
    return dg.MaterializeResult(
        data_version=rows_version(result["rows"], f"catalogue-{CATALOGUE_VERSION}"),
        metadata={
            "dagster/row_count": result["rows"],
            "computed": result["computed"],
            "table": FEATURE_TABLE,
            "features": dg.MetadataValue.md(markdown_table(catalogue)),
        },
    )


def _latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}


@dg.asset(group_name=GROUP, pool=WAREHOUSE_POOL, kinds={"sklearn"}, deps=[transfer_features])
def risk_model(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    risk: RiskResource,
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    """A candidate model version in the registry, evaluated against the logistic baseline."""
    from pipelines.risk.labels import read_labels
    from pipelines.risk.training import train_candidate  # heavy: see module top

    with warehouse.connect(read_only=True) as con:
        features = read_features(con)
        ledger_labels = read_labels(con)
    truth = pl.read_parquet(risk.ground_truth_path) if risk.ground_truth_path else None
    outcome = train_candidate(features, ledger_labels, risk.registry, settings, truth=truth)
    context.log.info(f"registered candidate {outcome.version}")
    # The promotion gate's verdict is decided (and logged in the registry when it keeps the
    # candidate back) here, where the registry is written anyway; the check only reads it.
    gate = outcome.promotion(risk.registry, dry_run=True)
    passes = gate.promoted or gate.live_before == gate.candidate
    if not passes:
        risk.registry.record(gate)
    table = outcome.evaluation.table()
    png = outcome.evaluation.pr_curve_png()
    image = base64.b64encode(png).decode() if png else ""
    return dg.MaterializeResult(
        metadata={
            "version": outcome.version,
            "live_version": outcome.live_version or "",
            "candidate_average_precision": outcome.candidate_metrics.get("average_precision"),
            "live_average_precision": (outcome.live_metrics or {}).get("average_precision"),
            "live_metrics": dg.MetadataValue.json(outcome.live_metrics or {}),
            "evaluation": dg.MetadataValue.md(
                markdown_table(table.with_columns(pl.col(pl.Float64).round(4)))
            ),
            # How many folds the means are over, and why any was skipped.
            "folds": outcome.evaluation.folds_summary(),
            "metrics": dg.MetadataValue.json(
                json.loads(json.dumps(outcome.evaluation.metrics, default=str))
            ),
            "precision_recall": dg.MetadataValue.md(
                f"![precision-recall](data:image/png;base64,{image})" if image else "_no plot_"
            ),
            "passes_gate": passes,
            "gate_reason": gate.reason,
            "train_rows": outcome.extra["train_rows"],
            "train_frauds": outcome.extra["train_frauds"],
        }
    )


@dg.asset_check(asset=risk_model, blocking=True)
def risk_model_beats_live(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """The candidate beats the live model's average precision on the same test window (or is the
    live model already: trained again on the same data). Reads the verdict `risk_model` recorded;
    writes nothing. A candidate stopped here stays a challenger and `live_model` does not run."""
    meta = _latest_metadata(context.instance, risk_model.key)
    return dg.AssetCheckResult(
        passed=bool(meta.get("passes_gate")),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"candidate": meta.get("version", ""), "reason": meta.get("gate_reason", "")},
    )


@dg.asset(group_name=GROUP, deps=[risk_model])
def live_model(context: dg.AssetExecutionContext, risk: RiskResource) -> dg.MaterializeResult:
    """The live model version: the candidate, once it passed the promotion gate."""
    meta = _latest_metadata(context.instance, risk_model.key)
    decision = risk.registry.promote(meta["version"], live_metrics=meta.get("live_metrics") or None)
    return dg.MaterializeResult(
        metadata={
            "live": decision.live_after or "",
            "promoted": decision.promoted,
            "reason": decision.reason,
            "challengers": dg.MetadataValue.json(risk.registry.challengers()),
        }
    )


@dg.asset(
    group_name=GROUP, pool=WAREHOUSE_POOL, kinds={"duckdb"}, deps=[transfers, transfer_features]
)
def online_decisions(warehouse: WarehouseResource, risk: RiskResource) -> dg.MaterializeResult:
    """What `upi-risk serve` decided before the money moved, copied from the operational
    database: the decisions of record of the transfers it decided (they replace batch ones)."""
    from pipelines.decisions.online_log import online_engine
    from pipelines.decisions.online_record import ONLINE_TABLE, load_online_decisions

    engine = online_engine(risk.operational_db_url)
    with warehouse.connect() as con:
        result = load_online_decisions(con, engine)
        summary = con.sql(
            f"""SELECT count(*) AS decisions, count(*) FILTER (WHERE fallback) AS fallbacks,
                    quantile_cont(latency_us, 0.5) / 1000 AS latency_ms_p50,
                    quantile_cont(latency_us, 0.99) / 1000 AS latency_ms_p99
                FROM {ONLINE_TABLE}"""
        ).pl()
    return dg.MaterializeResult(
        metadata={
            **result,
            "table": ONLINE_TABLE,
            "all_online_decisions": dg.MetadataValue.md(markdown_table(summary)),
        }
    )


@dg.asset_check(asset=online_decisions, blocking=False)
def online_batch_parity(warehouse: WarehouseResource, risk: RiskResource) -> dg.AssetCheckResult:
    """A sample of the latest day's online decisions recomputed in batch: the share whose
    features and decision match (warns below 99.9%: the online and batch paths drift)."""
    from pipelines.decisions.online_record import PARITY_WARN_BELOW, online_batch_parity

    with warehouse.connect(read_only=True) as con:
        report = online_batch_parity(
            con,
            risk.registry,
            allowlist_path=Path(risk.allowlist_path) if risk.allowlist_path else None,
        )
    share = report.share_matching
    return dg.AssetCheckResult(
        passed=share is None or share >= PARITY_WARN_BELOW,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            "no online decision with batch features yet"
            if share is None
            else f"{share:.2%} of {report.sampled} sampled online decisions match the batch"
        ),
        metadata={
            k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v
            for k, v in report.as_metadata().items()
            if v is not None
        },
    )


@dg.asset(
    group_name=GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb"},
    deps=[transfer_features, live_model, online_decisions],
)
def transfer_scores(warehouse: WarehouseResource, risk: RiskResource) -> dg.MaterializeResult:
    """Risk score, decision and reason codes of every transfer (live model; challengers in shadow)."""
    from pipelines.decisions.policy import read_allowlist
    from pipelines.decisions.scoring import score_new_transfers  # heavy: see module top

    with warehouse.connect() as con:
        allowlist = read_allowlist(Path(risk.allowlist_path)) if risk.allowlist_path else set()
        result = score_new_transfers(con, risk.registry, allowlist=allowlist)
    decisions = pl.DataFrame(
        list(result["decisions"].items()), schema=["decision", "transfers"], orient="row"
    )
    return dg.MaterializeResult(
        metadata={
            "live_model": result["live"],
            "policy": result["policy"],
            "hold_threshold": result["hold_threshold"],
            "scored": dg.MetadataValue.json(result["scored"]),
            "decisions": dg.MetadataValue.md(markdown_table(decisions)),
            "table": SCORES_TABLE,
        }
    )


@dg.asset(group_name=GROUP, pool=WAREHOUSE_POOL, deps=[transfer_scores, online_decisions])
def decision_outbox(
    warehouse: WarehouseResource, risk: RiskResource, settings: dg.ResourceParam[Settings]
) -> dg.MaterializeResult:
    """Decisions for recent transfers, durably queued for the transfer service (idempotent)."""
    from pipelines.decisions.scoring import recent_decision_records  # heavy: see module top

    with warehouse.connect(read_only=True) as con:
        records = recent_decision_records(con, risk.registry, settings)
    engine = operational_engine(risk.operational_db_url)
    new = enqueue(engine, records)
    return dg.MaterializeResult(
        metadata={
            "records": len(records),
            "new": new,
            "outbox": dg.MetadataValue.json(status_counts(engine)),
        }
    )


@dg.asset(group_name=GROUP, deps=[decision_outbox])
def decision_delivery(
    context: dg.AssetExecutionContext, risk: RiskResource
) -> dg.MaterializeResult:
    """Pending decisions delivered to the transfer service (retried later if it is down)."""
    engine = operational_engine(risk.operational_db_url)
    if not risk.transfer_service_url:
        context.log.warning("no transfer service URL set: decisions stay in the outbox")
        return dg.MaterializeResult(
            metadata={"outbox": dg.MetadataValue.json(status_counts(engine))}
        )
    report = deliver_until_drained(engine, risk.transfer_service_url, deadline_s=120)
    return dg.MaterializeResult(
        metadata={
            "delivered": report.delivered,
            "final_409": report.final_409,
            "dead": report.dead,
            "retried": report.retried,
            "pending": report.pending,
            "decisions_per_second": round(report.per_second, 1),
            "outbox": dg.MetadataValue.json(status_counts(engine)),
        }
    )
