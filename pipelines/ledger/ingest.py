"""Exactly-once ingestion of ledger batches into the warehouse, with quarantine.

Every batch (a landing file, or a page of a Postgres table) goes through the same steps in one
transaction: validate against the contract, separate duplicates from conflicts (inside the
batch and against what is already loaded), insert the new rows, quarantine the rest with the
reason and the position, and record the batch. Rows in = loaded + duplicates + quarantined.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

from pipelines.ledger import contract as c
from pipelines.ledger import landing
from pipelines.ledger.validate import POSITION, reason_kind, validate_batch
from pipelines.warehouse import EVENT_TABLES, ensure_schema, scalar

# A key column per stream: a loaded row with the same key lies between the batch's min and max
# of it, and DuckDB's zone maps skip the row groups outside (ids from ordered counters prune well).
_RANGE_COLUMN = {"transfers": "ledger_seq", "accounts": "event_id", "labels": "reported_at"}


@dataclass
class IngestCounts:
    """Row accounting for one or more batches: rows_in = loaded + duplicates + quarantined."""

    rows_in: int = 0
    loaded: int = 0
    duplicates: int = 0
    quarantined: int = 0
    batches: int = 0
    files_rejected: int = 0
    files_skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, other: IngestCounts) -> None:
        for name in ("rows_in", "loaded", "duplicates", "quarantined"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.batches += other.batches
        self.files_rejected += other.files_rejected
        self.files_skipped += other.files_skipped
        for reason, n in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.loaded + self.duplicates + self.quarantined

    def as_dict(self) -> dict:
        out = asdict(self)
        out["reasons"] = dict(sorted(self.reasons.items(), key=lambda kv: -kv[1])[:10])
        return out


@dataclass
class IngestReport:
    """What one ingestion run did, per stream."""

    streams: dict[str, IngestCounts] = field(
        default_factory=lambda: {name: IngestCounts() for name in c.STREAMS}
    )

    def total(self) -> IngestCounts:
        out = IngestCounts()
        for counts in self.streams.values():
            out.add(counts)
        return out

    def as_dict(self) -> dict:
        return {name: counts.as_dict() for name, counts in self.streams.items()}


@dataclass(frozen=True)
class BatchSource:
    """Where a batch came from, as recorded with every row and every quarantined record."""

    kind: str  # "file" or "postgres"
    name: str  # landing-relative path, or schema.table
    position_kind: str  # "row", "line", "ledger_seq", "reported_at_us", "file"
    content_hash: str | None = None
    size_bytes: int | None = None
    mtime_ns: int | None = None


def _content_columns(stream: c.Stream) -> list[str]:
    return stream.columns


def _split_in_batch(stream: c.Stream, good: pl.DataFrame) -> tuple[pl.DataFrame, int, pl.DataFrame]:
    """(first occurrence of each key, count of identical repeats, conflicting repeats)."""
    key = list(stream.key)
    indexed = good.with_row_index("_i")
    repeated = indexed.select(pl.struct(key).is_duplicated()).to_series()
    if not repeated.any():  # the usual case, and much cheaper than the window below
        return (
            indexed,
            0,
            indexed.clear().with_columns(pl.lit([], pl.List(pl.String)).alias("_diff")),
        )
    groups = indexed.filter(repeated)
    differing = pl.concat_list(
        [
            pl.when(~pl.col(col).eq_missing(pl.col(col).first().over(key))).then(pl.lit(col))
            for col in stream.columns
        ]
    ).list.drop_nulls()
    flagged = groups.with_columns(
        (pl.col("_i") == pl.col("_i").min().over(key)).alias("_first"), differing.alias("_diff")
    )
    firsts = pl.concat(
        [indexed.filter(~repeated), flagged.filter(pl.col("_first")).drop("_first", "_diff")]
    ).sort("_i")
    repeats = flagged.filter(~pl.col("_first"))
    conflicts = repeats.filter(pl.col("_diff").list.len() > 0)
    return firsts, repeats.height - conflicts.height, conflicts


def _against_warehouse(
    con: duckdb.DuckDBPyConnection, stream: c.Stream, firsts: pl.DataFrame
) -> pl.DataFrame:
    """For each candidate row (_i) whose key is loaded already: which fields differ."""
    table = EVENT_TABLES[stream.name]
    key = list(stream.key)
    range_column = _RANGE_COLUMN[stream.name]
    low, high = firsts[range_column].min(), firsts[range_column].max()
    existing = con.sql(
        f"SELECT {', '.join(key)} FROM {table} WHERE {range_column} BETWEEN ? AND ?",
        params=[low, high],
    ).pl()
    matched = firsts.select("_i", *key).join(existing, on=key, how="semi").select("_i")
    if matched.is_empty():
        return matched.with_columns(pl.lit([], pl.List(pl.String)).alias("_diff"))
    candidates = firsts.join(matched, on="_i").select("_i", *stream.columns)
    on = " AND ".join(f"b.{k} = e.{k}" for k in key)
    diffs = ", ".join(
        f"CASE WHEN b.{col} IS DISTINCT FROM e.{col} THEN '{col}' END" for col in stream.columns
    )
    con.register("_batch_candidates", candidates)
    try:
        return con.sql(
            f"""SELECT b._i, list_filter([{diffs}], lambda x: x IS NOT NULL) AS _diff
                FROM _batch_candidates b JOIN {table} e ON {on}""",
        ).pl()
    finally:
        con.unregister("_batch_candidates")


_QUARANTINE_SCHEMA = {POSITION: pl.Int64, "reason": pl.String, "record": pl.String}


@dataclass
class PreparedBatch:
    """A batch validated and deduplicated within itself; not yet compared with the warehouse."""

    stream: c.Stream
    rows_in: int
    firsts: pl.DataFrame | None  # first occurrence of each key, with `_i`
    duplicates: int
    quarantine: list[pl.DataFrame]
    notes: list[str]


def prepare_batch(
    stream: c.Stream,
    raw: pl.DataFrame | None,
    *,
    unreadable: Iterable[tuple[int | None, str, str | None]] = (),
    note: str | None = None,
) -> PreparedBatch:
    """Validate a raw batch and split out repeats inside it; needs no warehouse, so it can run
    while the previous batch is being written."""
    unreadable = list(unreadable)
    quarantine = (
        [pl.DataFrame(unreadable, schema=_QUARANTINE_SCHEMA, orient="row")] if unreadable else []
    )
    prepared = PreparedBatch(stream, len(unreadable), None, 0, quarantine, [note] if note else [])
    if raw is not None and raw.height:
        prepared.rows_in += raw.height
        checked = validate_batch(stream, raw)
        if checked.extra_columns:
            prepared.notes.append(
                f"ignored columns not in the contract: {', '.join(checked.extra_columns)}"
            )
        quarantine.append(checked.rejected)
        firsts, prepared.duplicates, conflicts = _split_in_batch(stream, checked.good)
        if conflicts.height:
            quarantine.append(_conflict_rows(stream, conflicts, "earlier in this batch"))
        prepared.firsts = firsts
    return prepared


def load_batch(
    con: duckdb.DuckDBPyConnection,
    stream: c.Stream,
    raw: pl.DataFrame | None,
    source: BatchSource,
    *,
    unreadable: Iterable[tuple[int | None, str, str | None]] = (),
    note: str | None = None,
) -> IngestCounts:
    """Validate, deduplicate and load one raw batch in one transaction; return its counts."""
    return commit_batch(con, prepare_batch(stream, raw, unreadable=unreadable, note=note), source)


def commit_batch(
    con: duckdb.DuckDBPyConnection, prepared: PreparedBatch, source: BatchSource
) -> IngestCounts:
    """Compare a prepared batch with the warehouse and load it in one transaction."""
    now = datetime.now(UTC)
    stream = prepared.stream
    quarantine = list(prepared.quarantine)
    duplicates = prepared.duplicates
    firsts = prepared.firsts
    new_rows = None
    if firsts is not None:
        loaded_before = _against_warehouse(con, stream, firsts) if firsts.height else None
        if loaded_before is not None and loaded_before.height:
            conflicts = firsts.join(loaded_before, on="_i").filter(pl.col("_diff").list.len() > 0)
            duplicates += loaded_before.height - conflicts.height
            if conflicts.height:
                quarantine.append(_conflict_rows(stream, conflicts, "already loaded"))
            firsts = firsts.join(loaded_before, on="_i", how="anti")
        new_rows = firsts.select(*stream.columns, POSITION)

    rejected = (
        pl.concat(quarantine, how="vertical_relaxed")
        if quarantine
        else pl.DataFrame(schema=_QUARANTINE_SCHEMA)
    )
    if rejected.height:
        # A source read again (a Postgres look-back, a re-landed file) must not quarantine twice.
        seen = con.sql(
            """SELECT position AS _position, record FROM ledger.quarantine
               WHERE stream = ? AND source = ? AND position BETWEEN ? AND ?""",
            params=[stream.name, source.name, rejected[POSITION].min(), rejected[POSITION].max()],
        ).pl()
        if seen.height:
            before = rejected.height
            rejected = rejected.join(seen, on=[POSITION, "record"], how="anti", nulls_equal=True)
            duplicates += before - rejected.height
    counts = IngestCounts(
        rows_in=prepared.rows_in,
        loaded=new_rows.height if new_rows is not None else 0,
        duplicates=duplicates,
        quarantined=rejected.height,
        batches=1,
    )
    for reason, n in rejected.group_by(reason_kind(pl.col("reason"))).len().iter_rows():
        counts.reasons[reason] = n
    if not counts.balanced:  # a bug, not bad data: refuse to record an unbalanced batch
        raise AssertionError(f"row accounting does not balance for {source.name}: {counts}")

    batch_id = scalar(con, "SELECT nextval('ledger.batch_ids')")
    con.execute("BEGIN TRANSACTION")
    try:
        if new_rows is not None and new_rows.height:
            con.register("_new_rows", new_rows)
            con.execute(
                f"""INSERT INTO {EVENT_TABLES[stream.name]}
                    SELECT {", ".join(stream.columns)}, ?, {POSITION}, ?, ? FROM _new_rows""",
                [source.name, batch_id, now],
            )
            con.unregister("_new_rows")
        if rejected.height:
            con.register("_rejected", rejected)
            con.execute(
                f"""INSERT INTO ledger.quarantine
                    SELECT ?, ?, ?, ?, ?, {POSITION}, reason, record, ? FROM _rejected""",
                [batch_id, stream.name, source.kind, source.name, source.position_kind, now],
            )
            con.unregister("_rejected")
        notes = "; ".join(prepared.notes) or None
        _record_source(con, batch_id, stream, source, counts, "ingested", notes, now)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return counts


def _conflict_rows(stream: c.Stream, rows: pl.DataFrame, against: str) -> pl.DataFrame:
    key_text = pl.concat_str(
        [pl.lit(f"{k} ") + pl.col(k).cast(pl.String) for k in stream.key], separator=", "
    )
    reason = (
        pl.lit("conflict: ")
        + key_text
        + pl.lit(f" {against} with different ")
        + pl.col("_diff").list.join(", ")
    )
    record = pl.struct(stream.columns).struct.json_encode()
    return rows.select(pl.col(POSITION), reason.alias("reason"), record.alias("record"))


def _record_source(
    con: duckdb.DuckDBPyConnection,
    batch_id: int,
    stream: c.Stream,
    source: BatchSource,
    counts: IngestCounts,
    status: str,
    note: str | None,
    now: datetime,
) -> None:
    con.execute(
        "INSERT INTO ledger.ingested_sources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            batch_id,
            stream.name,
            source.kind,
            source.name,
            source.content_hash,
            source.size_bytes,
            source.mtime_ns,
            status,
            counts.rows_in,
            counts.loaded,
            counts.duplicates,
            counts.quarantined,
            note,
            now,
        ],
    )


def reject_file(
    con: duckdb.DuckDBPyConnection, stream: c.Stream, source: BatchSource, reason: str
) -> IngestCounts:
    """Quarantine a whole file that could not be read, so it is counted and not retried."""
    now = datetime.now(UTC)
    batch_id = scalar(con, "SELECT nextval('ledger.batch_ids')")
    counts = IngestCounts(batches=1, files_rejected=1, reasons={reason.split(":")[0]: 1})
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            "INSERT INTO ledger.quarantine VALUES (?, ?, ?, ?, 'file', NULL, ?, NULL, ?)",
            [batch_id, stream.name, source.kind, source.name, reason, now],
        )
        _record_source(con, batch_id, stream, source, counts, "rejected", reason, now)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return counts


def _known_files(
    con: duckdb.DuckDBPyConnection,
) -> tuple[dict[str, tuple[int | None, int | None]], dict[str, str]]:
    """(path -> (size, mtime) as last seen, content hash -> first path loaded with it)."""
    rows = con.sql(
        """SELECT source, size_bytes, mtime_ns, content_hash FROM ledger.ingested_sources
           WHERE source_kind = 'file' ORDER BY batch_id"""
    ).fetchall()
    seen = {source: (size, mtime) for source, size, mtime, _ in rows}
    hashes: dict[str, str] = {}
    for source, _, _, digest in rows:
        if digest is not None:
            hashes.setdefault(digest, source)
    return seen, hashes


def ingest_landing(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    *,
    streams: Iterable[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> IngestReport:
    """Load every landing file not loaded before; a re-run loads nothing new."""
    ensure_schema(con)
    wanted = set(streams) if streams is not None else set(c.STREAMS)
    known, hashes = _known_files(con)
    files = [f for f in landing.discover(landing_dir) if f.stream.name in wanted]
    report = IngestReport()
    todo: list[tuple[landing.LandingFile, BatchSource, str | None]] = []
    for file in files:
        counts = report.streams[file.stream.name]
        mtime_ns = file.path.stat().st_mtime_ns
        if known.get(file.relative) == (file.size, mtime_ns):
            counts.files_skipped += 1
            continue
        digest = landing.content_hash(file.path)
        source = BatchSource(
            kind="file",
            name=file.relative,
            position_kind=file.position_kind,
            content_hash=digest,
            size_bytes=file.size,
            mtime_ns=mtime_ns,
        )
        if digest in hashes:
            # The same bytes landed again (copied, renamed or touched): nothing new to read.
            counts.files_skipped += 1
            batch_id = scalar(con, "SELECT nextval('ledger.batch_ids')")
            note = f"same content as {hashes[digest]}"
            _record_source(
                con,
                batch_id,
                file.stream,
                source,
                IngestCounts(),
                "same_content",
                note,
                datetime.now(UTC),
            )
            continue
        hashes[digest] = file.relative
        # Landed files are immutable; a changed one is re-read and row dedup keeps it exact.
        note = "file changed since it was last ingested" if file.relative in known else None
        todo.append((file, source, note))

    def prepare(item: tuple[landing.LandingFile, BatchSource, str | None]):
        file, _, note = item
        raw = landing.read(file)
        if raw.file_error is not None:
            return raw.file_error
        return prepare_batch(file.stream, raw.frame, unreadable=raw.unreadable, note=note)

    # Reading and validating the next file overlaps with writing this one: Polars and DuckDB
    # both release the GIL, and the warehouse write is the slowest step.
    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(prepare, todo[0]) if todo else None
        for done, item in enumerate(todo, start=1):
            prepared = upcoming.result()
            upcoming = pool.submit(prepare, todo[done]) if done < len(todo) else None
            file, source, _ = item
            counts = report.streams[file.stream.name]
            if isinstance(prepared, str):
                counts.add(reject_file(con, file.stream, source, prepared))
            else:
                counts.add(commit_batch(con, prepared, source))
            if progress is not None:
                progress(file.relative, done, len(todo))
    return report


def quarantine_summary(con: duckdb.DuckDBPyConnection, limit: int = 5) -> list[dict]:
    """The latest quarantined records with their reason and position, for summaries."""
    rows = con.sql(
        """SELECT stream, source, position_kind, position, reason FROM ledger.quarantine
           ORDER BY quarantined_at DESC, batch_id DESC, position LIMIT ?""",
        params=[limit],
    ).fetchall()
    keys = ("stream", "source", "position_kind", "position", "reason")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def dumps(report: IngestReport) -> str:
    """The report as JSON."""
    return json.dumps(report.as_dict(), indent=2)
