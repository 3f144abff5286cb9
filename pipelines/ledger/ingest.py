"""Exactly-once ingestion of ledger batches into the warehouse, with quarantine.

Every batch (a landing file, or a page of a Postgres table) goes through the same steps:
validate against the contract, separate duplicates from conflicts (inside the batch and
against what is already loaded), insert the new rows, quarantine the rest with the reason and
the position, and record the batch. Rows in = loaded + duplicates + quarantined.

Landing files are committed in groups of about GROUP_ROWS rows, one transaction and one insert
a group, with the outcome of committing them one by one. DuckDB's append is most of the cost
of ingestion, and it is far cheaper in large inserts (see `commit_batches`).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import duckdb
import polars as pl

from pipelines.faults import crash_point
from pipelines.ledger import contract as c
from pipelines.ledger import landing
from pipelines.ledger.validate import POSITION, reason_kind, validate_batch
from pipelines.warehouse import EVENT_TABLES, ensure_schema, scalar

# A column of each stream's unique key: a loaded row with the same key lies between the batch's
# min and max of it, and DuckDB's zone maps skip the row groups outside (ids from ordered
# counters prune well).
_RANGE_COLUMN = {"transfers": "ledger_seq", "accounts": "event_id", "labels": "reported_at"}
# Landing files are committed in groups of about this many rows (see commit_batches): DuckDB
# appended the 24M benchmark rows 1.4x faster in 2M-row inserts than file by file.
GROUP_ROWS = 2_000_000
# Files read and validated ahead of the one being written; each holds up to ~1M rows.
_READ_AHEAD = 2
_BATCH = "_batch"  # which batch of a group a row came from


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
    # Files in the stream's landing folder that are not ledger files (another extension).
    files_ignored: list[str] = field(default_factory=list)

    def add(self, other: IngestCounts) -> None:
        for name in ("rows_in", "loaded", "duplicates", "quarantined"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.batches += other.batches
        self.files_rejected += other.files_rejected
        self.files_skipped += other.files_skipped
        self.files_ignored += other.files_ignored
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


def _split_repeats(stream: c.Stream, rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(first occurrence of each unique key in `_i` order, the later ones with `_diff`: the
    fields in which each differs from its first). `rows` is in ascending `_i` order."""
    key = list(stream.unique_key)
    # Every key holds its stream's range column: only rows repeating it need the full key.
    repeated = rows[_RANGE_COLUMN[stream.name]].is_duplicated()
    if repeated.any():
        maybe = rows.filter(repeated).select(pl.struct(key).is_duplicated()).to_series()
        repeated = repeated.scatter(repeated.arg_true(), maybe)
    if not repeated.any():  # the usual case, and much cheaper than the window below
        return rows, rows.clear().with_columns(pl.lit([], pl.List(pl.String)).alias("_diff"))
    groups = rows.filter(repeated)
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
        [rows.filter(~repeated), flagged.filter(pl.col("_first")).drop("_first", "_diff")]
    ).sort("_i")
    return firsts, flagged.filter(~pl.col("_first")).drop("_first")


def _against_warehouse(
    con: duckdb.DuckDBPyConnection, stream: c.Stream, firsts: pl.DataFrame
) -> pl.DataFrame:
    """For each candidate row (_i) whose key is loaded already: which fields differ."""
    table = EVENT_TABLES[stream.name]
    key = list(stream.unique_key)
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
    # One match a row, even in a warehouse loaded before `ledger_seq` was enforced unique
    # across the ledger (it may hold two rows of one seq): a row is a repeat once.
    diffs = ", ".join(
        f"CASE WHEN b.{col} IS DISTINCT FROM e.{col} THEN '{col}' END" for col in stream.columns
    )
    con.register("_batch_candidates", candidates)
    try:
        return con.sql(
            f"""SELECT b._i, list_filter([{diffs}], lambda x: x IS NOT NULL) AS _diff
                FROM _batch_candidates b JOIN {table} e ON {on}
                QUALIFY row_number() OVER (PARTITION BY b._i ORDER BY e._batch_id) = 1""",
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
    now: datetime | None = None,
) -> PreparedBatch:
    """Validate a raw batch and split out repeats inside it; needs no warehouse, so it can run
    while the previous batch is being written. `now` is the ingestion time (see
    `validate_batch`)."""
    unreadable = list(unreadable)
    quarantine = (
        [pl.DataFrame(unreadable, schema=_QUARANTINE_SCHEMA, orient="row")] if unreadable else []
    )
    prepared = PreparedBatch(stream, len(unreadable), None, 0, quarantine, [note] if note else [])
    if raw is not None and raw.height:
        prepared.rows_in += raw.height
        checked = validate_batch(stream, raw, now=now)
        if checked.extra_columns:
            prepared.notes.append(
                f"ignored columns not in the contract: {', '.join(checked.extra_columns)}"
            )
        quarantine.append(checked.rejected)
        firsts, repeats = _split_repeats(stream, checked.good.with_row_index("_i"))
        conflicts = repeats.filter(pl.col("_diff").list.len() > 0)
        prepared.duplicates = repeats.height - conflicts.height
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
    return commit_batches(con, [(prepared, source)])[0]


def commit_batches(
    con: duckdb.DuckDBPyConnection,
    items: Sequence[tuple[PreparedBatch, BatchSource]],
    *,
    copies: Sequence[tuple[BatchSource, str]] = (),
) -> list[IngestCounts]:
    """Load prepared batches of one stream in one transaction and one insert, with the same
    outcome as committing them one after another: a key first seen in an earlier batch of the
    group counts as already loaded. Returns each batch's counts.

    `copies` are files with the same bytes as a batch of the group, each with the name of that
    batch's source: they are recorded as such in the same transaction, so a copy never points
    at a file whose rows were not committed.

    One insert of a few million rows costs DuckDB a fraction of many small ones (it compresses
    whole row groups once), which is most of the ingestion time.
    """
    now = datetime.now(UTC)
    stream = items[0][0].stream
    if any(prepared.stream is not stream for prepared, _ in items):
        raise ValueError("a group of batches must all be of one stream")
    quarantine = [list(prepared.quarantine) for prepared, _ in items]
    duplicates = [prepared.duplicates for prepared, _ in items]

    def settle(repeats: pl.DataFrame) -> None:
        """Count identical repeats as duplicates and quarantine conflicting ones, per batch."""
        conflicts = repeats.filter(pl.col("_diff").list.len() > 0)
        identical = repeats.height - conflicts.height
        if identical:
            same = repeats.filter(pl.col("_diff").list.len() == 0)
            for k, n in same.group_by(_BATCH).len().iter_rows():
                duplicates[k] += n
        for (k,), rows in conflicts.partition_by(_BATCH, as_dict=True).items():
            quarantine[k].append(_conflict_rows(stream, rows, "already loaded"))

    parts = [
        prepared.firsts.with_columns(pl.lit(k, pl.UInt32).alias(_BATCH))
        for k, (prepared, _) in enumerate(items)
        if prepared.firsts is not None and prepared.firsts.height
    ]
    new_rows = None
    if parts:
        rows = pl.concat(parts, rechunk=False).drop("_i").with_row_index("_i")
        loaded_before = _against_warehouse(con, stream, rows)
        if loaded_before.height:
            settle(rows.join(loaded_before, on="_i"))
            rows = rows.join(loaded_before, on="_i", how="anti")
        if _ranges_overlap(parts, _RANGE_COLUMN[stream.name]):
            # A key can be in more than one batch (the range column is part of every key).
            rows, repeats = _split_repeats(stream, rows)
            settle(repeats)
        new_rows = rows.select(*stream.columns, POSITION, _BATCH)

    counts, rejected_by_batch = [], []
    for k, (prepared, source) in enumerate(items):
        rejected = _unseen_rejections(con, stream, source, quarantine[k])
        batch_counts = IngestCounts(
            rows_in=prepared.rows_in,
            loaded=0 if new_rows is None else int((new_rows[_BATCH] == k).sum()),
            duplicates=duplicates[k] + sum(q.height for q in quarantine[k]) - rejected.height,
            quarantined=rejected.height,
            batches=1,
        )
        for reason, n in rejected.group_by(reason_kind(pl.col("reason"))).len().iter_rows():
            batch_counts.reasons[reason] = n
        if not batch_counts.balanced:  # a bug, not bad data: refuse to record it
            raise AssertionError(
                f"row accounting does not balance for {source.name}: {batch_counts}"
            )
        counts.append(batch_counts)
        rejected_by_batch.append(rejected)

    batch_ids = [scalar(con, "SELECT nextval('ledger.batch_ids')") for _ in items]
    copy_ids = [scalar(con, "SELECT nextval('ledger.batch_ids')") for _ in copies]
    with _transaction(con):
        if new_rows is not None and new_rows.height:
            # Arrow string views: DuckDB reads them without the copy a plain export makes.
            con.register("_new_rows", new_rows.to_arrow(compat_level=pl.CompatLevel.newest()))
            with _unordered_appends(con):
                con.execute(
                    f"""INSERT INTO {EVENT_TABLES[stream.name]}
                        SELECT {", ".join(stream.columns)}, ($sources)[{_BATCH} + 1], {POSITION},
                               ($batch_ids)[{_BATCH} + 1], $now
                        FROM _new_rows""",
                    {
                        "sources": [source.name for _, source in items],
                        "batch_ids": batch_ids,
                        "now": now,
                    },
                )
            con.unregister("_new_rows")
        for (prepared, source), batch_id, rejected, batch_counts in zip(
            items, batch_ids, rejected_by_batch, counts, strict=True
        ):
            if rejected.height:
                con.register("_rejected", rejected)
                con.execute(
                    f"""INSERT INTO ledger.quarantine
                        SELECT ?, ?, ?, ?, ?, {POSITION}, reason, record, ? FROM _rejected""",
                    [batch_id, stream.name, source.kind, source.name, source.position_kind, now],
                )
                con.unregister("_rejected")
            notes = "; ".join(prepared.notes) or None
            _record_source(con, batch_id, stream, source, batch_counts, "ingested", notes, now)
        for (copy, original), batch_id in zip(copies, copy_ids, strict=True):
            _record_copy(con, batch_id, stream, copy, original, now)
    return counts


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One ingestion transaction: committed whole, or rolled back. Its commit is a crash point
    on both sides (`pipelines.faults`), where the fault-injection tests kill ingestion."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        crash_point("ingest")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    crash_point("ingest")


def _ranges_overlap(parts: list[pl.DataFrame], column: str) -> bool:
    """Whether the batches' [min, max] spans of `column` overlap (they seldom do: files of an
    ordered ledger cover consecutive ranges)."""
    spans = sorted((part[column].min(), part[column].max()) for part in parts)
    return any(low <= high for (_, high), (low, _) in pairwise(spans))


def _unseen_rejections(
    con: duckdb.DuckDBPyConnection,
    stream: c.Stream,
    source: BatchSource,
    quarantine: list[pl.DataFrame],
) -> pl.DataFrame:
    """The rejected rows of a batch, less those its source already had quarantined: a source
    read again (a Postgres look-back, a re-landed file) must not quarantine twice."""
    if not quarantine:
        return pl.DataFrame(schema=_QUARANTINE_SCHEMA)
    rejected = pl.concat(quarantine, how="vertical_relaxed")
    if rejected.height:
        seen = con.sql(
            """SELECT position AS _position, record FROM ledger.quarantine
               WHERE stream = ? AND source = ? AND position BETWEEN ? AND ?""",
            params=[stream.name, source.name, rejected[POSITION].min(), rejected[POSITION].max()],
        ).pl()
        if seen.height:
            rejected = rejected.join(seen, on=[POSITION, "record"], how="anti", nulls_equal=True)
    return rejected


@contextmanager
def _unordered_appends(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Let DuckDB write an insert's row groups in any order: rows carry their own order
    (ledger_seq, _position), and keeping the insertion order costs about 1.3x the CPU."""
    before = scalar(con, "SELECT current_setting('preserve_insertion_order')")
    con.execute("SET preserve_insertion_order = false")
    try:
        yield
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if before else 'false'}")


def _conflict_rows(stream: c.Stream, rows: pl.DataFrame, against: str) -> pl.DataFrame:
    key_text = pl.concat_str(
        [pl.lit(f"{k} ") + pl.col(k).cast(pl.String) for k in stream.unique_key], separator=", "
    )
    # The rest of the natural key names the row for a reader (the transfer of a ledger_seq).
    named = [k for k in stream.key if k not in stream.unique_key]
    if named:
        key_text = key_text + pl.concat_str(
            [pl.lit(f" ({k} ") + pl.col(k).cast(pl.String) + pl.lit(")") for k in named]
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


def _record_copy(
    con: duckdb.DuckDBPyConnection,
    batch_id: int,
    stream: c.Stream,
    copy: BatchSource,
    original: str,
    now: datetime,
) -> None:
    """Record a file whose bytes equal an ingested or rejected file's: nothing in it to read."""
    note = f"same content as {original}"
    _record_source(con, batch_id, stream, copy, IngestCounts(), "same_content", note, now)


def reject_file(
    con: duckdb.DuckDBPyConnection, stream: c.Stream, source: BatchSource, reason: str
) -> IngestCounts:
    """Quarantine a whole file that could not be read, so it is counted and not retried."""
    now = datetime.now(UTC)
    batch_id = scalar(con, "SELECT nextval('ledger.batch_ids')")
    counts = IngestCounts(batches=1, files_rejected=1, reasons={reason.split(":")[0]: 1})
    with _transaction(con):
        con.execute(
            "INSERT INTO ledger.quarantine VALUES (?, ?, ?, ?, 'file', NULL, ?, NULL, ?)",
            [batch_id, stream.name, source.kind, source.name, reason, now],
        )
        _record_source(con, batch_id, stream, source, counts, "rejected", reason, now)
    return counts


def _known_files(
    con: duckdb.DuckDBPyConnection,
) -> tuple[dict[str, tuple[int | None, int | None]], dict[str, str]]:
    """(path -> (size, mtime) as last seen, content hash -> first path read with it).

    Only a file whose rows were read and committed (ingested or rejected) can be the original
    of a copy. A copy recorded against anything else (an older version wrote the copy's row
    before its original committed) is forgotten, so that it is read again.
    """
    rows = con.sql(
        """SELECT source, size_bytes, mtime_ns, content_hash, status
           FROM ledger.ingested_sources WHERE source_kind = 'file' ORDER BY batch_id"""
    ).fetchall()
    hashes: dict[str, str] = {}
    for source, _, _, digest, status in rows:
        if digest is not None and status != "same_content":
            hashes.setdefault(digest, source)
    seen = {
        source: (size, mtime)
        for source, size, mtime, digest, status in rows
        if status != "same_content" or digest in hashes
    }
    return seen, hashes


def ingest_landing(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    *,
    streams: Iterable[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> IngestReport:
    """Load every landing file not loaded before; a re-run loads nothing new.

    Everything recorded about a file commits in the transaction that commits its rows, so a
    run stopped at any point (an error, a kill) leaves the warehouse as if the files committed
    so far were the only ones; the next run reads the rest.
    """
    ensure_schema(con)
    wanted = set(streams) if streams is not None else set(c.STREAMS)
    known, hashes = _known_files(con)
    found = landing.scan(landing_dir)
    report = IngestReport()
    for relative in found.ignored:
        stream_name = relative.split("/", 1)[0]
        if stream_name in wanted:
            report.streams[stream_name].files_ignored.append(relative)
    files = [f for f in found.files if f.stream.name in wanted]
    todo: list[tuple[landing.LandingFile, str | None]] = []
    for file in files:
        try:
            mtime_ns = file.path.stat().st_mtime_ns
        except FileNotFoundError:  # moved away since the folder was listed: nothing to read
            continue
        if known.get(file.relative) == (file.size, mtime_ns):
            report.streams[file.stream.name].files_skipped += 1
            continue
        # Landed files are immutable; a changed one is re-read and row dedup keeps it exact.
        note = "file changed since it was last ingested" if file.relative in known else None
        todo.append((file, note))
    now = datetime.now(UTC)

    def prepare(item: tuple[landing.LandingFile, str | None]):
        file, note = item
        try:
            source = BatchSource(
                kind="file",
                name=file.relative,
                position_kind=file.position_kind,
                content_hash=landing.content_hash(file.path),
                size_bytes=file.size,
                mtime_ns=file.path.stat().st_mtime_ns,
            )
        except FileNotFoundError:  # moved away since the folder was listed: nothing to read
            return None, None
        if source.content_hash in hashes:
            return source, None  # decided in file order below, where `hashes` is kept
        raw = landing.read(file)
        if raw.file_error is not None:
            return source, raw.file_error
        try:
            return source, prepare_batch(
                file.stream, raw.frame, unreadable=raw.unreadable, note=note, now=now
            )
        except (pl.exceptions.PolarsError, ValueError, TypeError) as exc:
            # Content we did not foresee: reject the file by name and keep the stream going.
            # Other failures (memory, I/O) are not the file's: they stop the run, and the next
            # run reads the file again.
            return source, f"could not be validated: {landing.one_line(exc)}"

    group: list[tuple[PreparedBatch, BatchSource]] = []
    copies: list[tuple[BatchSource, str]] = []  # copies of the group's files, with them
    pending: set[str] = set()  # content hashes of the group's files

    def commit_group() -> None:
        if group:
            committed = commit_batches(con, group, copies=copies)
            for (prepared, _), counts in zip(group, committed, strict=True):
                report.streams[prepared.stream.name].add(counts)
            group.clear()
            copies.clear()
            pending.clear()

    # Reading and validating the next files overlaps with writing the current group: Polars
    # and DuckDB both release the GIL.
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead: deque[Future] = deque()
        for done, (file, _) in enumerate(todo, start=1):
            while len(ahead) <= _READ_AHEAD and done - 1 + len(ahead) < len(todo):
                ahead.append(pool.submit(prepare, todo[done - 1 + len(ahead)]))
            source, prepared = ahead.popleft().result()
            if source is None:
                continue
            counts = report.streams[file.stream.name]
            if group and group[0][0].stream is not file.stream:
                commit_group()
            if source.content_hash in hashes:
                # The same bytes landed again (copied, renamed or touched): nothing new to read.
                counts.files_skipped += 1
                original = hashes[source.content_hash]
                if source.content_hash in pending:
                    copies.append((source, original))  # recorded when the original commits
                else:
                    _commit_copy(con, file.stream, source, original)
            elif isinstance(prepared, str):
                hashes[source.content_hash] = file.relative
                counts.add(reject_file(con, file.stream, source, prepared))
            elif prepared is not None:  # None only when its content was seen (above)
                hashes[source.content_hash] = file.relative
                pending.add(source.content_hash)
                group.append((prepared, source))
                if sum(p.rows_in for p, _ in group) >= GROUP_ROWS:
                    commit_group()
            if progress is not None:
                progress(file.relative, done, len(todo))
        commit_group()
    return report


def _commit_copy(
    con: duckdb.DuckDBPyConnection, stream: c.Stream, copy: BatchSource, original: str
) -> None:
    """Record, in a transaction of its own, a copy of a file that is committed already."""
    batch_id = scalar(con, "SELECT nextval('ledger.batch_ids')")
    with _transaction(con):
        _record_copy(con, batch_id, stream, copy, original, datetime.now(UTC))


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
