"""Running the Dagster jobs from the CLI, against a persistent instance in the data directory.

Runs started here show up in the Dagster UI (`make ui`) like runs started by the daemon.
"""

import os
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from pipelines.settings import DATA_DIR_ENV, DataDir

_INSTANCE_YAML = """\
# Written by upi-risk. DuckDB allows one writer process per file: every asset or check that
# opens the warehouse is in the `warehouse` pool, limited to one step at a time across runs.
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


def prepare_instance(data_dir: DataDir) -> dg.DagsterInstance:
    """Point Dagster at `<data-dir>/dagster` (unless DAGSTER_HOME is set) and open the instance."""
    data_dir.ensure()
    os.environ[DATA_DIR_ENV] = str(data_dir.root)
    home = os.environ.setdefault("DAGSTER_HOME", str(data_dir.dagster_home))
    config = data_dir.dagster_home / "dagster.yaml"
    if home == str(data_dir.dagster_home) and not config.exists():
        config.write_text(_INSTANCE_YAML)
    return dg.DagsterInstance.get()


@dataclass
class JobSummary:
    """What a job run did: per asset its metadata, per check its outcome."""

    run_id: str
    success: bool
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _plain(value: dg.MetadataValue) -> Any:
    return getattr(value, "value", value)


def run_job(
    job_name: str,
    data_dir: DataDir,
    *,
    log_level: str = "WARNING",
    tags: dict[str, str] | None = None,
) -> JobSummary:
    """Execute a job of the project's definitions in this process; never raises on a failed step.

    `tags` select partitions, e.g. a range of days for a daily-partitioned job.
    """
    instance = prepare_instance(data_dir)
    from pipelines.definitions import defs  # after the environment points at data_dir

    job = defs().resolve_job_def(job_name)
    result = job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        tags=tags,
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
    return summary
