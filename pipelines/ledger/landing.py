"""Landing files: find them under `landing/<stream>/**` and read each into a raw batch."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipelines.ledger import contract as c
from pipelines.ledger.validate import POSITION

FORMATS = {".parquet": "parquet", ".ndjson": "ndjson", ".jsonl": "ndjson"}
# Enough lines to see every key a producer writes; keys that first appear later are ignored.
_NDJSON_KEY_SAMPLE = 10_000


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


def discover(landing_dir: Path) -> list[LandingFile]:
    """Every Parquet / NDJSON file under `landing_dir/<stream>/`, in a stable order."""
    found: list[LandingFile] = []
    for stream in c.STREAMS.values():
        folder = landing_dir / stream.name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            fmt = FORMATS.get(path.suffix.lower())
            # Writers land files atomically by renaming; hidden and temporary names are in flight.
            if fmt is None or not path.is_file() or path.name.startswith((".", "_")):
                continue
            found.append(
                LandingFile(
                    stream=stream,
                    path=path,
                    relative=path.relative_to(landing_dir).as_posix(),
                    size=path.stat().st_size,
                    format=fmt,
                )
            )
    return found


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
    if file.format == "parquet":
        try:
            frame = pl.read_parquet(file.path)
        except Exception as exc:  # any corrupt or truncated file lands here
            return RawFile(frame=None, file_error=f"unreadable Parquet file: {exc}")
        return RawFile(
            frame=frame.with_row_index(POSITION).with_columns(pl.col(POSITION).cast(pl.Int64))
        )
    return _read_ndjson(file.path)


def _read_ndjson(path: Path) -> RawFile:
    data = path.read_bytes()
    lines = data.split(b"\n")
    keys: dict[str, None] = {}
    for line in lines[:_NDJSON_KEY_SAMPLE]:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            keys.update(dict.fromkeys(obj))
    schema = {k: pl.String() for k in keys} or {"_empty": pl.String()}
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
            except ValueError as exc:
                unreadable.append((number, f"malformed JSON: {exc}", text[:2000]))
                continue
            if not isinstance(obj, dict):
                unreadable.append((number, "expected a JSON object per line", text[:2000]))
                continue
            good.append(line)
            good_lines.append(number)
        frame = pl.read_ndjson(io.BytesIO(b"\n".join(good)), schema=schema) if good else None
    if frame is not None:
        frame = frame.drop("_empty", strict=False).with_columns(
            pl.Series(POSITION, good_lines, dtype=pl.Int64)
        )
    return RawFile(frame=frame, unreadable=unreadable)
