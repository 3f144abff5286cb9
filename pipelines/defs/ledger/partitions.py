"""The adoption marts' partitions: the India (IST) days the ledger holds, no more, no fewer."""

import datetime as dt

import dagster as dg
import duckdb

from pipelines.adoption.marts import DayRange, ledger_days

# Dynamic, not daily from a fixed start: the UI lists the days there is data for, and a day
# becomes a partition when the ledger first holds a transfer of it. Keys are ISO dates, kept
# contiguous and in calendar order, so that a range of keys is a range of days.
ledger_day_partitions = dg.DynamicPartitionsDefinition(name="ledger_days")


def register_ledger_days(instance: dg.DagsterInstance, con: duckdb.DuckDBPyConnection) -> list[str]:
    """Make the partitions every IST day from the ledger's first transfer to its last; return
    the keys added. The ledger's `transfers` asset calls it after each refresh."""
    span = ledger_days(con)
    wanted = [day.isoformat() for day in span.days] if span else []
    name = ledger_day_partitions.name
    have = instance.get_dynamic_partitions(name)
    if have != wanted[: len(have)]:
        # The ledger now starts earlier (or later): Dagster orders keys as they were added, so
        # add them all again in calendar order. Materializations are kept, by key.
        for key in have:
            instance.delete_dynamic_partition(name, key)
        have = []
    added = wanted[len(have) :]
    if added:
        instance.add_dynamic_partitions(name, added)
    return added


def registered_days(instance: dg.DagsterInstance, first: dt.date, last: dt.date) -> DayRange | None:
    """The days from `first` to `last` that are partitions, or None if none is."""
    keys = instance.get_dynamic_partitions(ledger_day_partitions.name)
    if not keys:
        return None
    first = max(first, dt.date.fromisoformat(keys[0]))
    last = min(last, dt.date.fromisoformat(keys[-1]))
    return DayRange(first, last) if first <= last else None


def partition_range_tags(first: dt.date, last: dt.date) -> dict[str, str]:
    """Run tags that make one run materialize every partition from `first` to `last` (both
    must be partitions: see `registered_days`)."""
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }


def partition_days(context: dg.AssetExecutionContext) -> DayRange:
    """The IST days of the partitions this run materializes (one, or a backfilled range)."""
    keys = context.partition_key_range
    return DayRange(dt.date.fromisoformat(keys.start), dt.date.fromisoformat(keys.end))
