"""Ingestion from landing files: exactly once, out of order, and nothing lost on bad input."""

import shutil

import polars as pl
import pytest

from pipelines.ledger import contract as c
from pipelines.ledger.current import refresh_accounts, refresh_transfers
from pipelines.ledger.ingest import ingest_landing
from pipelines.warehouse import warehouse
from tests.factories import (
    account_event,
    json_line,
    label,
    land_lines,
    land_parquet,
    transfer,
)


@pytest.fixture
def dirs(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    return landing, tmp_path / "warehouse.duckdb"


def count(con, table: str) -> int:
    return con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def quarantine(con) -> pl.DataFrame:
    return con.sql(
        "SELECT stream, source, position_kind, position, reason, record FROM ledger.quarantine ORDER BY source, position"
    ).pl()


def test_landing_twice_and_rerunning_adds_nothing(dirs):
    landing, db = dirs
    rows = [transfer(i) for i in range(1, 101)]
    first = land_parquet(landing, c.TRANSFERS, "day1/part-0.parquet", rows)
    with warehouse(db) as con:
        report = ingest_landing(con, landing)
        assert report.streams["transfers"].loaded == 100
        # The same file again under another name, and the same rows in another format.
        shutil.copy(first, landing / "transfers" / "copy-of-part-0.parquet")
        land_lines(landing, c.TRANSFERS, "again.ndjson", [json_line(r) for r in rows[:40]])
        again = ingest_landing(con, landing)
        assert again.streams["transfers"].loaded == 0
        assert again.streams["transfers"].duplicates == 40
        assert again.streams["transfers"].files_skipped == 2  # the first file, and its copy
        third = ingest_landing(con, landing)
        assert third.total().rows_in == 0
        assert third.streams["transfers"].files_skipped == 3
        assert count(con, "ledger.transfer_events") == 100
        assert count(con, "ledger.quarantine") == 0


def test_duplicates_inside_one_file_are_counted_not_loaded(dirs):
    landing, db = dirs
    rows = [transfer(1), transfer(2), transfer(1), transfer(2), transfer(3)]
    land_parquet(landing, c.TRANSFERS, "dups.parquet", rows)
    with warehouse(db) as con:
        counts = ingest_landing(con, landing).streams["transfers"]
        assert (counts.rows_in, counts.loaded, counts.duplicates, counts.quarantined) == (
            5,
            3,
            2,
            0,
        )


def test_broken_rows_are_quarantined_exactly_and_good_rows_load(dirs):
    landing, db = dirs
    good = [transfer(i) for i in range(1, 11)]
    land_parquet(landing, c.TRANSFERS, "a-good.parquet", good)
    bad_lines = [
        json_line(transfer(11)),  # line 1: good
        json_line(transfer(12, amount_paise="twelve")),  # line 2: wrong type
        json_line(transfer(13, payer_vpa="Not A VPA")),  # line 3: bad VPA
        json_line(transfer(14, amount_paise=-5)),  # line 4: negative amount
        json_line(transfer(15, amount_paise=c.P2P_LIMIT_PAISE + 1)),  # line 5: over P2P limit
        json_line(transfer(16, channel="CARRIER_PIGEON")),  # line 6: unknown enum
        json_line(transfer(3, amount_paise=999)),  # line 7: conflicts with a loaded row
        json_line(transfer(17)),  # line 8: good
        '{"transfer_id": "TX00000018", "ledger_seq": 18, "created_at": "2026-03-0',  # line 9: cut
        json_line(
            transfer(19, payee_type="MERCHANT", mcc="5411", amount_paise=c.P2M_LIMIT_PAISE + 1)
        ),
        json_line(transfer(20, created_at="yesterday")),  # line 11: bad timestamp
        json_line(transfer(21, payee_type="PERSON", mcc="5411")),  # line 12: mcc for a person
    ]
    land_lines(landing, c.TRANSFERS, "broken.ndjson", bad_lines)
    truncated = land_parquet(landing, c.TRANSFERS, "truncated.parquet", [transfer(30)])
    truncated.write_bytes(truncated.read_bytes()[:100])
    (landing / "transfers" / "empty.parquet").write_bytes(b"")
    renamed = pl.DataFrame([transfer(40)]).rename({"amount_paise": "amount", "payer_vpa": "payer"})
    renamed.write_parquet(landing / "transfers" / "renamed.parquet")

    with warehouse(db) as con:
        counts = ingest_landing(con, landing).streams["transfers"]
        loaded_ids = set(
            con.sql("SELECT transfer_id FROM ledger.transfer_events").pl()["transfer_id"].to_list()
        )
        q = quarantine(con)

    assert counts.balanced
    assert loaded_ids == {f"TX{i:08d}" for i in [*range(1, 12), 17]}
    assert counts.loaded == 12
    assert counts.files_rejected == 2
    assert counts.quarantined == 11  # 10 broken lines in broken.ndjson + the renamed file's row
    broken = q.filter(pl.col("source") == "transfers/broken.ndjson")
    assert broken["position"].to_list() == [2, 3, 4, 5, 6, 7, 9, 10, 11, 12]
    assert set(broken["position_kind"]) == {"line"}
    reasons = dict(zip(broken["position"], broken["reason"], strict=True))
    assert reasons[2].startswith("amount_paise: expected Int64, got twelve")
    assert "payer_vpa: expected a VPA" in reasons[3] and "Not A VPA" in reasons[3]
    assert reasons[4] == "amount_paise: expected > 0"
    assert "over the P2P limit" in reasons[5]
    assert "channel: expected one of" in reasons[6] and "CARRIER_PIGEON" in reasons[6]
    assert reasons[7].startswith("conflict: ledger_seq 3 (transfer_id TX00000003) already loaded")
    assert reasons[7].endswith("amount_paise")
    assert reasons[9].startswith("malformed JSON")
    assert "over the P2M limit" in reasons[10]
    assert reasons[11].startswith("created_at: expected timestamp, got yesterday")
    assert reasons[12] == "mcc: expected 0000 for a PERSON payee"
    # The original values are kept with every quarantined row.
    assert '"twelve"' in broken.filter(pl.col("position") == 2)["record"][0]
    files = q.filter(pl.col("position_kind") == "file")
    assert dict(zip(files["source"], files["reason"], strict=True)) == {
        "transfers/empty.parquet": "empty file (0 bytes)",
        "transfers/truncated.parquet": files.filter(
            pl.col("source") == "transfers/truncated.parquet"
        )["reason"][0],
    }
    assert files.filter(pl.col("source") == "transfers/truncated.parquet")["reason"][0].startswith(
        "unreadable Parquet file"
    )
    renamed_reason = q.filter(pl.col("source") == "transfers/renamed.parquet")["reason"][0]
    assert "payer_vpa: required column is missing" in renamed_reason
    assert "amount_paise: required column is missing" in renamed_reason


def test_rerun_after_bad_input_quarantines_nothing_twice(dirs):
    landing, db = dirs
    land_lines(landing, c.TRANSFERS, "b.ndjson", [json_line(transfer(1)), "{oops"])
    (landing / "transfers" / "empty.parquet").write_bytes(b"")
    with warehouse(db) as con:
        ingest_landing(con, landing)
        ingest_landing(con, landing)
        assert count(con, "ledger.quarantine") == 2
        assert count(con, "ledger.transfer_events") == 1


def test_conflicting_rows_inside_one_batch_keep_the_first(dirs):
    landing, db = dirs
    land_parquet(
        landing,
        c.TRANSFERS,
        "x.parquet",
        [transfer(1), transfer(1, status="FAILED", response_code="Z9")],
    )
    with warehouse(db) as con:
        counts = ingest_landing(con, landing).streams["transfers"]
        status = con.sql("SELECT status FROM ledger.transfer_events").fetchall()
        reason = quarantine(con)["reason"][0]
    assert (counts.loaded, counts.quarantined) == (1, 1)
    assert status == [("SUCCESS",)]
    assert "earlier in this batch" in reason and "status" in reason and "response_code" in reason


def test_current_state_is_the_latest_row_whatever_the_arrival_order(dirs):
    landing, db = dirs
    pending = transfer(1, ledger_seq=10, status="PENDING", response_code=None)
    success = transfer(1, ledger_seq=11, status="SUCCESS")
    reversed_ = transfer(1, ledger_seq=20, status="REVERSED", response_code="RB")
    other = transfer(2, ledger_seq=12)
    # The final state lands first, the earlier states later.
    land_parquet(landing, c.TRANSFERS, "a.parquet", [success, other])
    with warehouse(db) as con:
        ingest_landing(con, landing)
        refresh_transfers(con)
        land_parquet(landing, c.TRANSFERS, "b.parquet", [pending])
        ingest_landing(con, landing)
        result = refresh_transfers(con)
        assert result["changed"] == 1
        state = dict(con.sql("SELECT transfer_id, status FROM ledger.transfers").fetchall())
        assert state == {"TX00000001": "SUCCESS", "TX00000002": "SUCCESS"}
        land_parquet(landing, c.TRANSFERS, "c.parquet", [reversed_])
        ingest_landing(con, landing)
        refresh_transfers(con)
        row = con.sql(
            "SELECT status, first_seq, events FROM ledger.transfers WHERE transfer_id = 'TX00000001'"
        ).fetchall()
        assert row == [("REVERSED", 10, 3)]
        assert count(con, "ledger.transfers") == 2


def test_accounts_and_labels_dedup_and_quarantine(dirs):
    landing, db = dirs
    events = [account_event(i) for i in range(1, 6)]
    events.append(account_event(6, event_type="BANK_LINKED", vpa="payer.1@waaxis"))
    land_parquet(landing, c.ACCOUNTS, "a.parquet", events)
    land_lines(
        landing,
        c.ACCOUNTS,
        "b.ndjson",
        [json_line(account_event(1)), json_line(account_event(7, event_type="ABDUCTED"))],
    )
    land_parquet(landing, c.LABELS_STREAM, "l.parquet", [label(1), label(2), label(1)])
    land_lines(
        landing,
        c.LABELS_STREAM,
        "l2.ndjson",
        [json_line(label(3, label="MAYBE")), json_line(label(1, label="LEGIT"))],
    )
    with warehouse(db) as con:
        report = ingest_landing(con, landing)
        accounts = refresh_accounts(con)
        linked = con.sql(
            "SELECT bank_linked_at IS NOT NULL FROM ledger.accounts WHERE vpa = 'payer.1@waaxis'"
        ).fetchall()
        q = quarantine(con)
    a, lab = report.streams["accounts"], report.streams["labels"]
    assert (a.rows_in, a.loaded, a.duplicates, a.quarantined) == (8, 6, 1, 1)
    assert (lab.rows_in, lab.loaded, lab.duplicates, lab.quarantined) == (5, 2, 1, 2)
    assert accounts["accounts"] == 5
    assert linked == [(True,)]
    label_reasons = q.filter(pl.col("stream") == "labels")["reason"].to_list()
    assert any(
        r.startswith("label: expected one of FRAUD, LEGIT, got MAYBE") for r in label_reasons
    )
    assert any(r.startswith("conflict:") and r.endswith("label") for r in label_reasons)
    assert "event_type: expected one of" in q.filter(pl.col("stream") == "accounts")["reason"][0]


def test_extra_columns_are_ignored_and_noted(dirs):
    landing, db = dirs
    frame = pl.DataFrame([transfer(1)]).with_columns(pl.lit("x").alias("future_field"))
    frame.write_parquet(landing / "transfers.parquet")
    (landing / "transfers").mkdir()
    shutil.move(landing / "transfers.parquet", landing / "transfers" / "f.parquet")
    with warehouse(db) as con:
        counts = ingest_landing(con, landing).streams["transfers"]
        note = con.sql("SELECT note FROM ledger.ingested_sources").fetchall()[0][0]
    assert counts.loaded == 1
    assert "future_field" in note


def _outcome(con) -> tuple:
    events = con.sql(
        f"SELECT {', '.join(c.TRANSFERS.columns)}, _source, _position FROM ledger.transfer_events "
        "ORDER BY transfer_id, ledger_seq"
    ).fetchall()
    sources = con.sql(
        "SELECT source, status, rows_in, loaded, duplicates, quarantined FROM ledger.ingested_sources "
        "ORDER BY source"
    ).fetchall()
    rejected = con.sql(
        "SELECT source, position, reason FROM ledger.quarantine ORDER BY source, position"
    ).fetchall()
    return events, sources, rejected


def test_files_committed_together_load_as_if_one_after_another(tmp_path, monkeypatch):
    """Several files go in one transaction and one insert; every key, count and reason is what
    committing the files one at a time gives."""
    import pipelines.ledger.ingest as ingest

    def land(landing):
        land_parquet(landing, c.TRANSFERS, "0-first.parquet", [transfer(i) for i in range(1, 6)])
        land_parquet(
            landing,
            c.TRANSFERS,
            "1-second.parquet",
            [
                transfer(2),  # same as in the first file: a duplicate
                transfer(3, amount_paise=1),  # conflicts with the first file's row
                transfer(6),
                transfer(6),  # repeated inside this file
                transfer(1, amount_paise=7),  # conflicts with the warehouse (loaded earlier)
            ],
        )
        land_parquet(
            landing,
            c.TRANSFERS,
            "2-third.parquet",
            [transfer(6), transfer(1), transfer(3, amount_paise=1), transfer(7)],
        )

    outcomes = []
    for group_rows in (1, 10**9):
        monkeypatch.setattr(ingest, "GROUP_ROWS", group_rows)
        landing = tmp_path / f"landing-{group_rows}"
        land_parquet(landing, c.TRANSFERS, "00-earlier.parquet", [transfer(1)])
        with warehouse(tmp_path / f"w-{group_rows}.duckdb") as con:
            ingest_landing(con, landing)
            land(landing)
            report = ingest_landing(con, landing).streams["transfers"]
            outcomes.append((report.as_dict(), _outcome(con)))
    (one_by_one, grouped) = outcomes
    assert grouped == one_by_one
    counts, (events, sources, rejected) = grouped
    assert (counts["rows_in"], counts["loaded"], counts["duplicates"], counts["quarantined"]) == (
        14,
        6,
        5,
        3,
    )
    assert {row[0] for row in events} == {f"TX{i:08d}" for i in range(1, 8)}
    # Each file keeps its own counts: (rows in, loaded, duplicates, quarantined).
    assert {source: tuple(rest) for source, _, *rest in sources} == {
        "transfers/00-earlier.parquet": (1, 1, 0, 0),
        "transfers/0-first.parquet": (5, 4, 1, 0),
        "transfers/1-second.parquet": (5, 1, 2, 2),
        "transfers/2-third.parquet": (4, 1, 2, 1),
    }
    assert [r[2] for r in rejected if r[0] == "transfers/1-second.parquet"] == [
        "conflict: ledger_seq 3 (transfer_id TX00000003) already loaded with different amount_paise",
        "conflict: ledger_seq 1 (transfer_id TX00000001) already loaded with different amount_paise",
    ]
