"""The plain-SQL formulation of the features (the benchmark's baseline) agrees with the engine.

Two independent implementations, one with DuckDB RANGE window frames and ASOF joins, one with
sorts and prefix sums, must give the same value for every feature of every transfer.
"""

import math

import duckdb
import pytest

from pipelines.features.definitions import FEATURE_NAMES
from pipelines.features.engine import compute_features
from pipelines.features.reference_sql import compute_features_sql
from tests.test_features import random_ledger


@pytest.mark.parametrize("seed", [11, 12])
def test_sql_window_frames_agree_with_the_engine(seed: int) -> None:
    transfers, events, labels = random_ledger(seed)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("transfers_in", transfers)
    con.register("events_in", events)
    con.register("labels_in", labels)
    sql = compute_features_sql(con, "transfers_in", "events_in", "labels_in").sort("transfer_id")
    engine = compute_features(transfers, events, labels).sort("transfer_id")
    assert sql.columns == engine.columns
    assert sql["transfer_id"].equals(engine["transfer_id"])
    for name in FEATURE_NAMES:
        for tid, a, b in zip(engine["transfer_id"], engine[name], sql[name], strict=True):
            if a is None or b is None:
                assert a is None and b is None, f"{tid} {name}: engine {a}, SQL {b}"
            else:
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), f"{tid} {name}: {a} != {b}"
