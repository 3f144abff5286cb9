"""Shared fixtures: a real PostgreSQL server and a real Redis server started for the test
session."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.redis_server import redis_server

PG_DSN_ENV = "UPI_RISK_TEST_PG_DSN"
REDIS_URL_ENV = "UPI_RISK_TEST_REDIS_URL"


def _pg_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    if not candidates:
        raise RuntimeError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package "
            f"`postgresql`, or set {PG_DSN_ENV} to a server the tests may use"
        )
    return candidates[0].parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A DSN of a throwaway PostgreSQL server (or the one named by $UPI_RISK_TEST_PG_DSN)."""
    if os.environ.get(PG_DSN_ENV):
        yield os.environ[PG_DSN_ENV]
        return
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="upi-risk-pg-"))
    data = root / "data"
    port = _free_port()
    # initdb refuses to run as root: run the server as the `postgres` system user then.
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, user="postgres")
    subprocess.run(
        [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *prefix,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        for _ in range(50):
            try:
                psycopg.connect(dsn).close()
                break
            except psycopg.OperationalError:
                time.sleep(0.1)
        yield dsn
    finally:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a throwaway Redis server (or the one named by $UPI_RISK_TEST_REDIS_URL; tests
    then keep to keys under a prefix of their own)."""
    if os.environ.get(REDIS_URL_ENV):
        yield os.environ[REDIS_URL_ENV]
        return
    with redis_server() as url:
        yield url
