"""Ingestion killed at every commit boundary, and random landings with crashes in between: the
warehouse ends as a clean run leaves it, with every good row loaded exactly once."""

import multiprocessing
import os
import shutil
import signal
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import pipelines.ledger.ingest as ingest
from pipelines.faults import CRASH_AT_ENV
from pipelines.ledger import contract as c
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


def _ingest(landing: str, db: str, group_rows: int, crash_at: str | None) -> None:
    """In a child process: one ingestion run, killed at `crash_at` if set."""
    if crash_at:
        os.environ[CRASH_AT_ENV] = crash_at
    else:
        os.environ.pop(CRASH_AT_ENV, None)
    ingest.GROUP_ROWS = group_rows
    with warehouse(Path(db)) as con:
        ingest.ingest_landing(con, Path(landing))


def _land_mix(landing: Path) -> None:
    """Every kind of file ingestion meets: good, duplicated, conflicting, broken, copied,
    unreadable, in all three streams."""
    land_parquet(landing, c.TRANSFERS, "d1/a.parquet", [transfer(i) for i in range(1, 6)])
    land_parquet(
        landing,
        c.TRANSFERS,
        "d1/b.parquet",
        [transfer(4), transfer(6), transfer(7, amount_paise=-1), transfer(2, amount_paise=5)],
    )
    shutil.copy(landing / "transfers/d1/a.parquet", landing / "transfers/d1/c-copy.parquet")
    land_lines(
        landing,
        c.TRANSFERS,
        "d2/d.ndjson",
        [json_line(transfer(8)), "{broken", json_line(transfer(9, ledger_seq=8))],
    )
    (landing / "transfers/d2/e.parquet").write_bytes(b"PAR1 not really")
    land_parquet(landing, c.TRANSFERS, "d3/f.parquet", [transfer(i) for i in range(9, 12)])
    land_parquet(landing, c.ACCOUNTS, "a.parquet", [account_event(i) for i in range(1, 4)])
    land_parquet(landing, c.ACCOUNTS, "b.parquet", [account_event(3), account_event(4)])
    land_parquet(landing, c.LABELS_STREAM, "a.parquet", [label(1), label(2)])
    shutil.copy(landing / "labels/a.parquet", landing / "labels/b-copy.parquet")


def _outcome(db: Path) -> dict[str, list[tuple]]:
    """The warehouse's content, without ids and times that differ between any two runs."""
    with warehouse(db, read_only=True) as con:
        return {
            table: con.sql(f"SELECT {columns} FROM {table} ORDER BY ALL").fetchall()
            for table, columns in {
                "ledger.transfer_events": ", ".join([*c.TRANSFERS.columns, "_source", "_position"]),
                "ledger.account_events": ", ".join([*c.ACCOUNTS.columns, "_source", "_position"]),
                "ledger.labels": ", ".join([*c.LABELS_STREAM.columns, "_source", "_position"]),
                "ledger.ingested_sources": "stream, source, status, rows_in, loaded, duplicates, "
                "quarantined, note",
                "ledger.quarantine": "stream, source, position, reason, record",
            }.items()
        }


def _run(landing: Path, db: Path, crash_at: int | None, group_rows: int) -> int:
    """One ingestion run in a child process (the crash kills it with SIGKILL); its exit code."""
    # Children fork from a server that has imported ingestion once: a run costs ms, not seconds.
    forks = multiprocessing.get_context("forkserver")
    forks.set_forkserver_preload(["pipelines.ledger.ingest", __name__])
    crash = None if crash_at is None else f"ingest:{crash_at}"
    child = forks.Process(target=_ingest, args=(str(landing), str(db), group_rows, crash))
    child.start()
    child.join(120)
    if child.exitcode is None:
        child.kill()
        pytest.fail(f"ingestion hung (crash point {crash_at})")
    assert child.exitcode in (0, -signal.SIGKILL), f"crash point {crash_at}: {child.exitcode}"
    return child.exitcode


@pytest.mark.slow
@pytest.mark.parametrize("group_rows", [1, 1_000])  # a commit per file, and files grouped
def test_kill_at_every_commit_boundary_then_rerun_equals_a_clean_run(tmp_path, group_rows):
    landing = tmp_path / "landing"
    _land_mix(landing)
    clean = tmp_path / "clean.duckdb"
    assert _run(landing, clean, None, group_rows) == 0
    expected = _outcome(clean)
    assert expected["ledger.transfer_events"], "the mix loads something"

    crashes = 0
    for n in range(1, 200):
        db = tmp_path / f"crash-{n}.duckdb"
        if _run(landing, db, n, group_rows) == 0:
            break  # past the last boundary: the run completed
        crashes += 1
        for _ in range(
            2
        ):  # the re-run restores a clean run's warehouse; a further one adds nothing
            assert _run(landing, db, None, group_rows) == 0
            assert _outcome(db) == expected, f"after a kill at boundary {n}"
    # Two boundaries per transaction (before and after COMMIT): files, copies, rejections.
    assert crashes >= 8


# --- Random landings, runs and crashes ----------------------------------------------------


class SimulatedCrash(BaseException):
    """Stands for a kill at a commit boundary inside the test process."""


def _crash_after(n: int):
    seen = 0

    def crash_point(name: str) -> None:
        nonlocal seen
        seen += 1
        if seen == n:
            raise SimulatedCrash

    return crash_point


_ROW_KINDS = st.sampled_from(["good", "good", "good", "bad"])


@st.composite
def landings(draw):
    """A sequence of runs; before each, some files land: each file a random mix of good rows
    (possibly seen in other files), rows that break the contract, byte copies of earlier files,
    and unreadable files. Each run may crash at some commit boundary."""
    pool = draw(st.integers(min_value=3, max_value=30))
    runs = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        files = []
        for _ in range(draw(st.integers(min_value=0, max_value=4))):
            kind = draw(st.sampled_from(["rows", "rows", "rows", "copy", "unreadable"]))
            if kind == "rows":
                rows = draw(
                    st.lists(st.tuples(st.integers(1, pool), _ROW_KINDS), min_size=1, max_size=12)
                )
                fmt = draw(st.sampled_from(["parquet", "ndjson"]))
                files.append(("rows", fmt, rows))
            else:
                files.append((kind, None, None))
        crash = draw(st.none() | st.integers(min_value=1, max_value=12))
        runs.append((files, crash))
    return runs


def _bad(i: int) -> dict:
    # A row breaking the contract; its ledger_seq is its own, so it never meets a good row.
    return transfer(i, ledger_seq=1_000_000 + i, amount_paise=0)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=landings())
def test_every_good_row_loads_once_whatever_lands_and_crashes(monkeypatch, plan):
    with tempfile.TemporaryDirectory() as tmp:
        landing, db = Path(tmp) / "landing", Path(tmp) / "w.duckdb"
        (landing / "transfers").mkdir(parents=True)
        monkeypatch.setattr(ingest, "GROUP_ROWS", 10)
        landed: list[Path] = []
        good_ids: set[int] = set()
        content_rows: dict[bytes, list] = {}  # distinct file contents -> their rows
        unreadable = 0
        for run, (files, crash) in enumerate(plan):
            for k, (kind, fmt, rows) in enumerate(files):
                name = f"r{run}-{k}"
                if kind == "copy" and landed:
                    src = landed[k % len(landed)]
                    path = landing / "transfers" / f"{name}-copy{src.suffix}"
                    shutil.copy(src, path)
                elif kind == "unreadable" or (kind == "copy" and not landed):
                    path = landing / "transfers" / f"{name}.parquet"
                    path.write_bytes(f"not parquet {name}".encode())
                else:
                    made = [transfer(i) if what == "good" else _bad(i) for i, what in rows]
                    good_ids |= {i for i, what in rows if what == "good"}
                    if fmt == "parquet":
                        path = land_parquet(landing, c.TRANSFERS, f"{name}.parquet", made)
                    else:
                        path = land_lines(
                            landing, c.TRANSFERS, f"{name}.ndjson", [json_line(r) for r in made]
                        )
                    content_rows.setdefault(path.read_bytes(), rows)
                landed.append(path)
                if path.read_bytes().startswith(b"not parquet"):
                    content_rows.setdefault(path.read_bytes(), [])
            with warehouse(db) as con:
                if crash is not None:
                    monkeypatch.setattr(ingest, "crash_point", _crash_after(crash))
                try:
                    ingest_landing(con, landing)
                except SimulatedCrash:
                    pass
                finally:
                    monkeypatch.setattr(ingest, "crash_point", lambda name: None)
                seqs = con.sql("SELECT ledger_seq FROM ledger.transfer_events").fetchall()
                assert len(seqs) == len(set(seqs)), "a row was loaded twice"

        with warehouse(db) as con:
            ingest_landing(con, landing)  # a last run that is not interrupted
            loaded = {
                r[0] for r in con.sql("SELECT ledger_seq FROM ledger.transfer_events").fetchall()
            }
            totals = con.sql(
                """SELECT sum(rows_in), sum(loaded), sum(duplicates), sum(quarantined),
                          count(*) FILTER (status = 'rejected')
                   FROM ledger.ingested_sources"""
            ).fetchall()[0]
            quarantine_rows = con.sql("SELECT count(*) FROM ledger.quarantine").fetchall()[0][0]
            recorded = {
                r[0] for r in con.sql("SELECT source FROM ledger.ingested_sources").fetchall()
            }

        assert loaded == good_ids
        rows_in, n_loaded, duplicates, quarantined, rejected_files = (int(t or 0) for t in totals)
        assert rows_in == n_loaded + duplicates + quarantined
        assert n_loaded == len(good_ids)
        bad_rows = sum(1 for rows in content_rows.values() for _, what in rows if what == "bad")
        assert rows_in == sum(len(rows) for rows in content_rows.values())
        assert quarantined == bad_rows
        unreadable = sum(1 for content in content_rows if content.startswith(b"not parquet"))
        assert rejected_files == unreadable
        assert quarantine_rows == bad_rows + unreadable
        # Every landed file is accounted for: read, rejected, or recorded as a copy.
        assert recorded == {p.relative_to(landing).as_posix() for p in landed}
