"""Ledger integrity under faults and hostile input: nothing lost, nothing loaded twice, nothing
implausible loaded, and one bad file never stops the files beside it."""

import datetime as dt
import json
import shutil

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipelines.ledger.ingest as ingest
from pipelines.ledger import contract as c
from pipelines.ledger.current import refresh_transfers
from pipelines.ledger.ingest import ingest_landing
from pipelines.warehouse import warehouse
from tests.factories import frame, json_line, land_lines, land_parquet, transfer


@pytest.fixture
def dirs(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    return landing, tmp_path / "warehouse.duckdb"


def loaded_ids(con) -> list[str]:
    return [
        r[0]
        for r in con.sql("SELECT transfer_id FROM ledger.transfer_events ORDER BY 1").fetchall()
    ]


def quarantined(con) -> dict[tuple[str, int | None], str]:
    rows = con.sql("SELECT source, position, reason FROM ledger.quarantine").fetchall()
    return {(source, position): reason for source, position, reason in rows}


def ids(numbers) -> list[str]:
    return [f"TX{i:08d}" for i in numbers]


# --- 1. A re-landed file is never lost ------------------------------------------------------


def test_copy_landed_with_its_original_loads_after_a_run_that_did_not_commit(dirs, monkeypatch):
    landing, db = dirs
    original = land_parquet(landing, c.TRANSFERS, "a.parquet", [transfer(i) for i in range(1, 6)])
    shutil.copy(original, landing / "transfers" / "b-copy.parquet")

    def commit_fails(*args, **kwargs):
        raise RuntimeError("disk full")  # the group's transaction never commits

    with warehouse(db) as con:
        monkeypatch.setattr(ingest, "commit_batches", commit_fails)
        with pytest.raises(RuntimeError):
            ingest_landing(con, landing)
        monkeypatch.undo()
        assert con.sql("SELECT count(*) FROM ledger.ingested_sources").fetchall()[0][0] == 0
        report = ingest_landing(con, landing).streams["transfers"]
        assert loaded_ids(con) == ids(range(1, 6))
        statuses = dict(con.sql("SELECT source, status FROM ledger.ingested_sources").fetchall())
    assert report.loaded == 5
    assert statuses == {
        "transfers/a.parquet": "ingested",
        "transfers/b-copy.parquet": "same_content",
    }


def test_copies_that_point_at_each_other_are_read_again(dirs):
    """An instance left by the old bookkeeping (each copy recorded as 'same content' as the
    other, neither loaded) heals on the next run."""
    landing, db = dirs
    original = land_parquet(landing, c.TRANSFERS, "a.parquet", [transfer(i) for i in range(1, 4)])
    copy = landing / "transfers" / "b.parquet"
    shutil.copy(original, copy)
    digest = ingest.landing.content_hash(original)
    with warehouse(db) as con:
        for batch_id, (path, other) in enumerate([(original, "b"), (copy, "a")], start=1):
            con.execute(
                """INSERT INTO ledger.ingested_sources VALUES
                   (?, 'transfers', 'file', ?, ?, ?, ?, 'same_content', 0, 0, 0, 0, ?, now())""",
                [
                    batch_id,
                    path.relative_to(landing).as_posix(),
                    digest,
                    path.stat().st_size,
                    path.stat().st_mtime_ns,
                    f"same content as transfers/{other}.parquet",
                ],
            )
        report = ingest_landing(con, landing).streams["transfers"]
        assert loaded_ids(con) == ids(range(1, 4))
    assert report.loaded == 3


# --- 3. One bad file never stops the stream -------------------------------------------------


def _parquet_with_invalid_utf8(path, rows):
    """A Parquet file whose string column `payer_vpa` holds bytes that are not UTF-8 in row 1."""
    table = frame(c.TRANSFERS, rows).to_arrow()
    vpas = [r["payer_vpa"].encode() for r in rows]
    vpas[1] = b"bad\xff\xfe@waaxis"
    raw = pa.array(vpas, pa.binary())
    as_string = pa.Array.from_buffers(pa.string(), len(vpas), raw.buffers())
    table = table.set_column(table.schema.get_field_index("payer_vpa"), "payer_vpa", as_string)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_invalid_utf8_in_parquet_quarantines_the_row_and_loads_the_rest(dirs):
    landing, db = dirs
    _parquet_with_invalid_utf8(
        landing / "transfers" / "a-bad-text.parquet", [transfer(i) for i in range(1, 4)]
    )
    land_parquet(landing, c.TRANSFERS, "b-good.parquet", [transfer(4)])
    with warehouse(db) as con:
        counts = ingest_landing(con, landing).streams["transfers"]
        assert loaded_ids(con) == ids([1, 3, 4])
        reasons = quarantined(con)
    assert counts.balanced and counts.quarantined == 1
    assert reasons == {("transfers/a-bad-text.parquet", 1): "payer_vpa: text is not valid UTF-8"}


def test_ndjson_with_a_byte_order_mark_loads(dirs):
    landing, db = dirs
    path = landing / "transfers" / "bom.ndjson"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(json_line(transfer(i)) for i in (1, 2)).encode())
    with warehouse(db) as con:
        counts = ingest_landing(con, landing).streams["transfers"]
        assert loaded_ids(con) == ids([1, 2])
    assert (counts.loaded, counts.quarantined, counts.files_rejected) == (2, 0, 0)


def test_invalid_utf8_line_in_ndjson_is_quarantined_by_line(dirs):
    landing, db = dirs
    path = landing / "transfers" / "text.ndjson"
    path.parent.mkdir(parents=True)
    lines = [json_line(transfer(i)).encode() for i in (1, 2, 3)]
    lines[1] = lines[1].replace(b"payer.2", b"pay\xffer")
    path.write_bytes(b"\n".join(lines))
    with warehouse(db) as con:
        ingest_landing(con, landing)
        assert loaded_ids(con) == ids([1, 3])
        assert quarantined(con) == {("transfers/text.ndjson", 2): "line is not valid UTF-8"}


def test_unreadable_file_is_rejected_by_name_and_the_rest_loads(dirs):
    landing, db = dirs
    good = land_parquet(landing, c.TRANSFERS, "a-good.parquet", [transfer(1)])
    truncated = landing / "transfers" / "b-truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    land_parquet(landing, c.TRANSFERS, "c-good.parquet", [transfer(2)])
    with warehouse(db) as con:
        counts = ingest_landing(con, landing).streams["transfers"]
        assert loaded_ids(con) == ids([1, 2])
        reason = quarantined(con)[("transfers/b-truncated.parquet", None)]
    assert counts.files_rejected == 1
    assert reason.startswith("unreadable Parquet file: ") and "\n" not in reason
    assert len(reason) < 500


# --- 4. NDJSON is read against the contract, not a sample ----------------------------------


def test_ndjson_key_first_seen_after_ten_thousand_lines_is_read(dirs):
    landing, db = dirs
    rows = [transfer(i) for i in range(1, 10_011)]
    lines = [json.dumps({**json.loads(json_line(r)), "note": None}) for r in rows]
    # The optional `note` key is absent from the first 10,005 lines, then present.
    lines = [
        json.dumps({k: v for k, v in json.loads(line).items() if k != "note"})
        if i < 10_005
        else json.dumps({**json.loads(line), "note": f"rent {i}"})
        for i, line in enumerate(lines)
    ]
    land_lines(landing, c.TRANSFERS, "late-key.ndjson", lines)
    with warehouse(db) as con:
        ingest_landing(con, landing)
        notes = con.sql(
            "SELECT note FROM ledger.transfer_events WHERE note IS NOT NULL ORDER BY ledger_seq"
        ).fetchall()
    assert [n for (n,) in notes] == [f"rent {i}" for i in range(10_005, 10_010)]


# --- 5. Implausible times are quarantined ---------------------------------------------------


@pytest.mark.parametrize("year", [1, 1900, 2015, 2999, 9999])
def test_implausible_timestamps_are_quarantined(dirs, year):
    landing, db = dirs
    bad = transfer(2, created_at=dt.datetime(year, 6, 1, tzinfo=dt.UTC))
    land_parquet(landing, c.TRANSFERS, "t.parquet", [transfer(1), bad, transfer(3)])
    with warehouse(db) as con:
        counts = ingest_landing(con, landing).streams["transfers"]
        assert loaded_ids(con) == ids([1, 3])
        reason = quarantined(con)[("transfers/t.parquet", 1)]
        refresh_transfers(con)  # the current-state step no longer meets absurd times
    assert counts.quarantined == 1
    expected = (
        "not before UPI's launch (2016-04-11)" if year < 2016 else "at most 1 day after ingestion"
    )
    assert reason.startswith(f"created_at: expected {expected}, got {year:04d}-06-01")


def test_a_clock_skew_under_a_day_is_accepted(dirs):
    landing, db = dirs
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=20)
    land_parquet(landing, c.TRANSFERS, "t.parquet", [transfer(1, created_at=soon)])
    with warehouse(db) as con:
        ingest_landing(con, landing)
        assert loaded_ids(con) == ids([1])


# --- 6. ledger_seq is unique across the whole ledger ----------------------------------------


def test_two_transfers_sharing_a_ledger_seq_are_never_both_loaded(dirs):
    landing, db = dirs
    clash_in_file = transfer(9, ledger_seq=1)  # another transfer with transfer 1's ledger_seq
    land_parquet(landing, c.TRANSFERS, "a.parquet", [transfer(1), clash_in_file, transfer(2)])
    land_parquet(landing, c.TRANSFERS, "b.parquet", [transfer(8, ledger_seq=2)])
    with warehouse(db) as con:
        first = ingest_landing(con, landing).streams["transfers"]
        # A later run, and a later file, cannot slip a third one in either.
        land_parquet(landing, c.TRANSFERS, "c.parquet", [transfer(7, ledger_seq=1), transfer(3)])
        second = ingest_landing(con, landing).streams["transfers"]
        assert loaded_ids(con) == ids([1, 2, 3])
        seqs = con.sql("SELECT ledger_seq FROM ledger.transfer_events").fetchall()
        reasons = quarantined(con)
    assert (first.loaded, first.quarantined, second.loaded, second.quarantined) == (2, 2, 1, 1)
    assert len(seqs) == len(set(seqs))
    assert reasons[("transfers/a.parquet", 1)] == (
        "conflict: ledger_seq 1 (transfer_id TX00000009) earlier in this batch with different "
        "transfer_id, created_at, payer_vpa, payee_vpa, amount_paise, payer_device_id"
    )
    assert reasons[("transfers/c.parquet", 0)].startswith(
        "conflict: ledger_seq 1 (transfer_id TX00000007) already loaded with different transfer_id"
    )


# --- 7. Encodings the contract allows, and what it does not ---------------------------------


def test_categorical_and_decimal_columns_load_as_the_contract_allows(dirs):
    landing, db = dirs
    rows = frame(c.TRANSFERS, [transfer(i) for i in range(1, 4)]).with_columns(
        pl.col("payee_type", "channel", "currency").cast(pl.Categorical),
        pl.col("amount_paise").cast(pl.Decimal(20, 0)),
        pl.col("ledger_seq").cast(pl.Decimal(20, 2)),
    )
    fractional = frame(c.TRANSFERS, [transfer(4)]).with_columns(
        pl.col("amount_paise").cast(pl.Decimal(20, 2)) + pl.lit(0.5).cast(pl.Decimal(20, 2)),
        pl.col("ledger_seq").cast(pl.Decimal(20, 2)),
        pl.col("payee_type", "channel", "currency").cast(pl.Categorical),
    )
    path = landing / "transfers" / "typed.parquet"
    path.parent.mkdir(parents=True)
    pl.concat([rows, fractional], how="vertical_relaxed").write_parquet(path)
    with warehouse(db) as con:
        counts = ingest_landing(con, landing).streams["transfers"]
        assert loaded_ids(con) == ids([1, 2, 3])
        amounts = con.sql("SELECT amount_paise FROM ledger.transfer_events ORDER BY 1").fetchall()
        reasons = quarantined(con)
    assert [a for (a,) in amounts] == [10_001, 10_002, 10_003]
    assert counts.quarantined == 1
    assert reasons[("transfers/typed.parquet", 3)].startswith(
        "amount_paise: expected Int64, got 10004.50"
    )


def test_json_object_or_array_in_a_string_field_is_quarantined(dirs):
    landing, db = dirs
    nested = json.loads(json_line(transfer(2)))
    nested["note"] = {"text": "rent"}
    listed = json.loads(json_line(transfer(3)))
    listed["payer_device_id"] = ["a", "b"]
    braces = json.loads(json_line(transfer(4)))
    braces["note"] = "{not json, just braces}"
    land_lines(
        landing,
        c.TRANSFERS,
        "nested.ndjson",
        [json_line(transfer(1)), json.dumps(nested), json.dumps(listed), json.dumps(braces)],
    )
    with warehouse(db) as con:
        ingest_landing(con, landing)
        assert loaded_ids(con) == ids([1, 4])
        reasons = quarantined(con)
    assert reasons == {
        ("transfers/nested.ndjson", 2): "note: expected a string, got a JSON object",
        ("transfers/nested.ndjson", 3): "payer_device_id: expected a string, got a JSON array",
    }


def test_files_with_other_extensions_are_reported_by_name(dirs):
    landing, db = dirs
    land_parquet(landing, c.TRANSFERS, "a.parquet", [transfer(1)])
    (landing / "transfers" / "b.csv").write_text("transfer_id\nTX1\n")
    (landing / "transfers" / "day" / "README.txt").parent.mkdir()
    (landing / "transfers" / "day" / "README.txt").write_text("hello")
    with warehouse(db) as con:
        counts = ingest_landing(con, landing).streams["transfers"]
    assert counts.loaded == 1
    assert counts.files_ignored == ["transfers/b.csv", "transfers/day/README.txt"]
    assert counts.as_dict()["files_ignored"] == ["transfers/b.csv", "transfers/day/README.txt"]


# --- Failures that are not the file's -------------------------------------------------------


def test_a_failure_that_is_not_the_files_stops_the_run_and_the_file_is_read_again(
    dirs, monkeypatch
):
    landing, db = dirs
    land_parquet(landing, c.TRANSFERS, "a.parquet", [transfer(1), transfer(2)])
    real = ingest.prepare_batch

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    with warehouse(db) as con:
        monkeypatch.setattr(ingest, "prepare_batch", out_of_memory)
        with pytest.raises(MemoryError):
            ingest_landing(con, landing)
        monkeypatch.setattr(ingest, "prepare_batch", real)
        counts = ingest_landing(con, landing).streams["transfers"]
        assert loaded_ids(con) == ids([1, 2])
    assert (counts.loaded, counts.files_rejected) == (2, 0)


def test_a_file_moved_away_during_the_run_does_not_stop_the_others(dirs, monkeypatch):
    landing, db = dirs
    land_parquet(landing, c.TRANSFERS, "a.parquet", [transfer(1)])
    gone = land_parquet(landing, c.TRANSFERS, "b.parquet", [transfer(2)])
    land_parquet(landing, c.TRANSFERS, "c.parquet", [transfer(3)])
    real = ingest.landing.content_hash

    def archived_meanwhile(path):
        if path == gone:
            path.unlink()  # an archiver takes it between the listing and the read
        return real(path)

    monkeypatch.setattr(ingest.landing, "content_hash", archived_meanwhile)
    with warehouse(db) as con:
        counts = ingest_landing(con, landing).streams["transfers"]
        assert loaded_ids(con) == ids([1, 3])
    assert counts.balanced and counts.files_rejected == 0


def test_a_warehouse_holding_a_repeated_ledger_seq_still_ingests(dirs):
    """A warehouse loaded before ledger_seq was unique across the ledger may hold two transfers
    of one seq; a later file with that seq is settled once, not twice."""
    landing, db = dirs
    land_parquet(landing, c.TRANSFERS, "a.parquet", [transfer(1)])
    with warehouse(db) as con:
        ingest_landing(con, landing)
        con.execute(
            """INSERT INTO ledger.transfer_events
               SELECT * REPLACE ('TX00000099' AS transfer_id) FROM ledger.transfer_events"""
        )
        land_parquet(landing, c.TRANSFERS, "b.parquet", [transfer(1), transfer(2)])
        counts = ingest_landing(con, landing).streams["transfers"]
    assert counts.balanced
    assert (counts.rows_in, counts.loaded, counts.duplicates, counts.quarantined) == (2, 1, 1, 0)
