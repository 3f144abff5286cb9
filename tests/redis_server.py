"""A throwaway `redis-server` (no persistence, a free port, a temporary directory), for the
tests' `redis_url` fixture and the state store benchmark."""

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server(timeout_s: float = 10.0) -> Iterator[str]:
    """Start a `redis-server`, yield its URL (`redis://127.0.0.1:<port>/0`) once it answers
    PING, then stop it and delete its directory."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server not found: install the Debian package `redis-server` "
            "(tests/system_packages.sh does), or point the tests at a server with "
            "$UPI_RISK_TEST_REDIS_URL"
        )
    root = Path(tempfile.mkdtemp(prefix="upi-risk-redis-"))
    port = free_port()
    # A server of the tests' own: nothing saved, nothing read from or written to the disk.
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(root),
            "--logfile",
            str(root / "server.log"),
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_timeout=1.0)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log = (root / "server.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(
                        f"redis-server on port {port} did not answer PING within {timeout_s} s "
                        f"(exit code {server.poll()}); its log ends:\n{log}"
                    ) from None
                time.sleep(0.02)
        client.close()
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(root, ignore_errors=True)
