"""Exactly-once ingestion of ledger batches into the warehouse, with quarantine.

Every batch (a landing file, or a page of a Postgres table) goes through the same steps in one
transaction: validate against the contract, separate duplicates from conflicts (inside the
batch and against what is already loaded), insert the new rows, quarantine the rest with the
reason and the position, and record the batch. Rows in = loaded + duplicates + quarantined.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

from pipelines.ledger import contract as c
from pipelines.ledger import landing
from pipelines.ledger.validate import POSITION, reason_kind, validate_batch
from pipelines.warehouse import EVENT_TABLES, ensure_schema, scalar

# Columns whose range prunes the existing-rows lookup (DuckDB zone maps skip the rest).
_RANGE_COLUMN = {"transfers": "ledger_seq", "accounts": None, "labels": "reported_at"}


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
    content = _content_columns(stream)
    indexed = good.with_row_index("_i")
    first_i = pl.col("_i").min().over(key)
    is_first = pl.col("_i") == first_i
    differing = pl.concat_list(
        [
            pl.when(~pl.col(col).eq_missing(pl.col(col).first().over(key))).then(pl.lit(col))
            for col in content
        ]
    ).list.drop_nulls()
    flagged = indexed.with_columns(is_first.alias("_first"), differing.alias("_diff"))
    firsts = flagged.filter(pl.col("_first")).drop("_first", "_diff")
    repeats = flagged.filter(~pl.col("_first"))
    conflicts = repeats.filter(pl.col("_diff").list.len() > 0)
    return firsts, repeats.height - conflicts.height, conflicts


def _against_warehouse(
    con: duckdb.DuckDBPyConnection, stream: c.Stream, firsts: pl.DataFrame
) -> pl.DataFrame:
    """For each candidate row (_i): whether its key is loaded already, and which fields differ."""
    table = EVENT_TABLES[stream.name]
    key = stream.key
    content = _content_columns(stream)
    range_column = _RANGE_COLUMN[stream.name]
    existing = f"SELECT {', '.join(content)} FROM {table}"
    params: list = []
    if range_column is not None and firsts.height:
        existing += f" WHERE {range_column} BETWEEN ? AND ?"
        params = [firsts[range_column].min(), firsts[range_column].max()]
    on = " AND ".join(f"b.{k} = e.{k}" for k in key)
    diffs = ", ".join(
        f"CASE WHEN b.{col} IS DISTINCT FROM e.{col} THEN '{col}' END" for col in content
    )
    con.register("_batch_candidates", firsts.select("_i", *content))
    try:
        return con.sql(
            f"""SELECT b._i, e.{key[0]} IS NOT NULL AS _exists,
                       list_filter([{diffs}], lambda x: x IS NOT NULL) AS _diff
                FROM _batch_candidates b LEFT JOIN ({existing}) e ON {on}""",
            params=params,
        ).pl()
    finally:
        con.unregister("_batch_candidates")


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
    now = datetime.now(UTC)
    quarantine: list[pl.DataFrame] = []
    unreadable = list(unreadable)
    if unreadable:
        quarantine.append(
            pl.DataFrame(
                unreadable,
                schema={POSITION: pl.Int64, "reason": pl.String, "record": pl.String},
                orient="row",
            )
        )
    rows_in = len(unreadable)
    duplicates = 0
    new_rows = None
    notes = [note] if note else []
    if raw is not None and raw.height:
        rows_in += raw.height
        checked = validate_batch(stream, raw)
        if checked.extra_columns:
            notes.append(f"ignored columns not in the contract: {', '.join(checked.extra_columns)}")
        quarantine.append(checked.rejected)
        firsts, in_batch_duplicates, in_batch_conflicts = _split_in_batch(stream, checked.good)
        duplicates += in_batch_duplicates
        if in_batch_conflicts.height:
            quarantine.append(_conflict_rows(stream, in_batch_conflicts, "earlier in this batch"))
        status = _against_warehouse(con, stream, firsts)
        firsts = firsts.join(status, on="_i", how="left")
        loaded_before = firsts.filter(pl.col("_exists"))
        conflicts = loaded_before.filter(pl.col("_diff").list.len() > 0)
        duplicates += loaded_before.height - conflicts.height
        if conflicts.height:
            quarantine.append(_conflict_rows(stream, conflicts, "already loaded"))
        new_rows = firsts.filter(~pl.col("_exists")).select(*stream.columns, POSITION)

    rejected = (
        pl.concat(quarantine, how="vertical_relaxed")
        if quarantine
        else pl.DataFrame(schema={POSITION: pl.Int64, "reason": pl.String, "record": pl.String})
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
    loaded = new_rows.height if new_rows is not None else 0
    counts = IngestCounts(
        rows_in=rows_in,
        loaded=loaded,
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
        _record_source(
            con, batch_id, stream, source, counts, "ingested", "; ".join(notes) or None, now
        )
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
    for done, file in enumerate(files, start=1):
        if progress is not None:
            progress(file.relative, done, len(files))
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
            _record_source(
                con,
                scalar(con, "SELECT nextval('ledger.batch_ids')"),
                file.stream,
                source,
                IngestCounts(),
                "same_content",
                f"same content as {hashes[digest]}",
                datetime.now(UTC),
            )
            continue
        hashes[digest] = file.relative
        note = None
        if file.relative in known:
            # Landed files are immutable; a changed one is re-read and row dedup keeps it exact.
            note = "file changed since it was last ingested"
        source = BatchSource(
            kind="file",
            name=file.relative,
            position_kind=file.position_kind,
            content_hash=digest,
            size_bytes=file.size,
            mtime_ns=mtime_ns,
        )
        raw = landing.read(file)
        if raw.file_error is not None:
            counts.add(reject_file(con, file.stream, source, raw.file_error))
        else:
            counts.add(
                load_batch(
                    con, file.stream, raw.frame, source, unreadable=raw.unreadable, note=note
                )
            )
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
