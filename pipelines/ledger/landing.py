"""Landing files: find them under `landing/<stream>/**` and read each into a raw batch."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.ledger import contract as c
from pipelines.ledger.validate import POSITION

FORMATS = {".parquet": "parquet", ".ndjson": "ndjson", ".jsonl": "ndjson"}
# Keys outside the contract are only reported (they are never read), from this many lines.
_NDJSON_EXTRA_KEY_SAMPLE = 10_000
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class LandingFile:
    """One landed file of one stream."""

    stream: c.Stream
    path: Path
    relative: str  # path under the landing directory, with forward slashes
    size: int
    format: str

    @property
    def position_kind(self) -> str:
        return "line" if self.format == "ndjson" else "row"


@dataclass
class RawFile:
    """A landing file read as a raw batch, plus what could not be read at all."""

    frame: pl.DataFrame | None
    unreadable: list[tuple[int, str, str]] = field(default_factory=list)  # position, reason, text
    file_error: str | None = None


@dataclass
class LandingScan:
    """What a landing directory holds: the files to read, and the files that are not ledger
    files (another extension), by landing-relative path."""

    files: list[LandingFile] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def scan(landing_dir: Path) -> LandingScan:
    """Every Parquet / NDJSON file under `landing_dir/<stream>/`, in a stable order, and the
    other files found there."""
    found = LandingScan()
    for stream in c.STREAMS.values():
        folder = landing_dir / stream.name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            # Writers land files atomically by renaming; hidden and temporary names are in flight.
            if not path.is_file() or path.name.startswith((".", "_")):
                continue
            fmt = FORMATS.get(path.suffix.lower())
            if fmt is None:
                found.ignored.append(path.relative_to(landing_dir).as_posix())
                continue
            found.files.append(
                LandingFile(
                    stream=stream,
                    path=path,
                    relative=path.relative_to(landing_dir).as_posix(),
                    size=path.stat().st_size,
                    format=fmt,
                )
            )
    return found


def discover(landing_dir: Path) -> list[LandingFile]:
    """Every Parquet / NDJSON file under `landing_dir/<stream>/`, in a stable order."""
    return scan(landing_dir).files


def iter_new(landing_dir: Path, known: set[str]) -> Iterator[LandingFile]:
    """Landing files whose relative path is not in `known`."""
    return (f for f in discover(landing_dir) if f.relative not in known)


def content_hash(path: Path) -> str:
    """A digest of the file's bytes, to recognise a file landed twice under another name."""
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def read(file: LandingFile) -> RawFile:
    """Read one landing file; never raises for bad content, it reports it instead."""
    if file.size == 0:
        return RawFile(frame=None, file_error="empty file (0 bytes)")
    try:
        if file.format == "parquet":
            frame = _read_parquet(file.path)
            return RawFile(
                frame=frame.with_row_index(POSITION).with_columns(pl.col(POSITION).cast(pl.Int64))
            )
        return _read_ndjson(file.stream, file.path)
    except (pl.exceptions.PolarsError, pa.ArrowException, ValueError) as exc:
        # A corrupt, truncated or foreign file; memory and I/O errors are not the file's fault
        # and propagate, so that the file is read again by the next run.
        kind = "Parquet" if file.format == "parquet" else "NDJSON"
        return RawFile(frame=None, file_error=f"unreadable {kind} file: {one_line(exc)}")


def one_line(exc: Exception) -> str:
    """An exception as one short line, for a rejection reason (Polars errors span pages)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except pl.exceptions.ComputeError as exc:
        if "utf-8" not in str(exc).lower():
            raise
    # Text that is not valid UTF-8 breaks the contract row by row, not the whole file: read the
    # text columns as bytes and let validation quarantine the rows that do not decode.
    table = pq.read_table(path)
    columns = []
    for column in table.columns:
        kind = column.type
        if pa.types.is_dictionary(kind):
            column = column.cast(kind.value_type)
            kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            column = column.cast(pa.large_binary())
        elif pa.types.is_string_view(kind):
            column = column.cast(pa.binary_view())
        columns.append(column)
    return pl.from_arrow(pa.table(columns, names=table.column_names))


def _read_ndjson(stream: c.Stream, path: Path) -> RawFile:
    data = path.read_bytes()
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    lines = data.split(b"\n")
    # The contract's schema, never one inferred from a sample: a key may first appear on any
    # line. Values are read as text and typed by validation, like every other source.
    schema = {name: pl.String() for name in stream.columns}
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        return RawFile(frame=None, file_error="empty file (no records)")
    try:
        frame = pl.read_ndjson(io.BytesIO(b"\n".join(line for _, line in numbered)), schema=schema)
        good_lines = [n for n, _ in numbered]
        unreadable: list[tuple[int, str, str]] = []
    except Exception:
        # Slow path only for files with broken lines: find them one by one.
        good, good_lines, unreadable = [], [], []
        for number, line in numbered:
            text = line.decode("utf-8", errors="replace")
            try:
                obj = json.loads(line)
            except UnicodeDecodeError:
                unreadable.append((number, "line is not valid UTF-8", text[:2000]))
                continue
            except ValueError as exc:
                unreadable.append((number, f"malformed JSON: {exc}", text[:2000]))
                continue
            if not isinstance(obj, dict):
                unreadable.append((number, "expected a JSON object per line", text[:2000]))
                continue
            good.append(line)
            good_lines.append(number)
        if not good:
            return RawFile(frame=None, unreadable=unreadable)
        frame = pl.read_ndjson(io.BytesIO(b"\n".join(good)), schema=schema)
    frame = frame.with_columns(pl.Series(POSITION, good_lines, dtype=pl.Int64))
    frame, nested = _without_nested_values(frame, numbered)
    unreadable = sorted(unreadable + nested)
    extra = _extra_keys(stream, numbered[:_NDJSON_EXTRA_KEY_SAMPLE])
    for key in extra:  # reported as a column so validation notes it, never loaded
        frame = frame.with_columns(pl.lit(None, pl.String).alias(key))
    return RawFile(frame=frame, unreadable=unreadable)


def _without_nested_values(
    frame: pl.DataFrame, numbered: list[tuple[int, bytes]]
) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    """Rows where a field holds a JSON object or array (read as its JSON text), moved out."""
    looks_nested = pl.any_horizontal(
        pl.col(name).str.starts_with("{") | pl.col(name).str.starts_with("[")
        for name in frame.columns
        if name != POSITION
    )
    candidates = frame.filter(looks_nested)[POSITION].to_list()
    lines = dict(numbered) if candidates else {}
    nested: list[tuple[int, str, str]] = []
    for number in candidates:
        obj = json.loads(lines[number])
        fields = [k for k, v in obj.items() if isinstance(v, dict | list) and k in frame.columns]
        if fields:
            text = lines[number].decode("utf-8", errors="replace")
            reason = "; ".join(
                f"{k}: expected a string, got a JSON {_json_kind(obj[k])}" for k in fields
            )
            nested.append((number, reason, text[:2000]))
    if nested:
        frame = frame.filter(~pl.col(POSITION).is_in([n for n, _, _ in nested]))
    return frame, nested


def _json_kind(value: object) -> str:
    return "object" if isinstance(value, dict) else "array"


def _extra_keys(stream: c.Stream, numbered: list[tuple[int, bytes]]) -> list[str]:
    keys: dict[str, None] = {}
    for _, line in numbered:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            keys.update(dict.fromkeys(obj))
    return [k for k in keys if k not in stream.columns]
