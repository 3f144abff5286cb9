"""Keyed tokens for personal data: VPAs become stable pseudonyms in every analytics output.

A token is HMAC-SHA256 of the VPA under the instance's key, so the same person has the same
token in every mart, dashboard and notebook of an instance, and nobody without the key can
recompute a token from a guessed VPA. The key comes from `$UPI_RISK_TOKEN_KEY` or, on the
embedded default, from `<data-dir>/token.key`, created at first use and never committed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

import duckdb

from pipelines.settings import DataDir

TOKEN_PREFIX = "u_"
TOKEN_HEX_CHARS = 16  # 64 bits: no collision expected below billions of VPAs
_BLOCK = 64  # SHA-256 block size, for HMAC's padded keys


def load_token_key(data_dir: DataDir, configured: str | None = None) -> bytes:
    """The instance's token key: the configured one (setting `token_key`) if given, else the
    data directory's own, created on first use."""
    if configured:
        return configured.encode()
    path = data_dir.token_key
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created readable by the owner only, and written once: tokens must stay stable.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip().encode()


def vpa_token(vpa: str, key: bytes) -> str:
    """The keyed token of one VPA (the same string `token_sql` computes in DuckDB)."""
    digest = hmac.new(key, vpa.encode(), hashlib.sha256).hexdigest()
    return TOKEN_PREFIX + digest[:TOKEN_HEX_CHARS]


def _hmac_hex_sql(expression: str, key: bytes) -> str:
    """DuckDB SQL for the token's hex digits: HMAC-SHA256 written out with DuckDB's own
    SHA-256, H((K ^ opad) || H((K ^ ipad) || message)), vectorized."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_BLOCK, b"\0")
    inner = bytes(b ^ 0x36 for b in padded).hex()
    outer = bytes(b ^ 0x5C for b in padded).hex()
    return (
        f"left(sha256(unhex('{outer}') || "
        f"unhex(sha256(unhex('{inner}') || encode({expression})))), {TOKEN_HEX_CHARS})"
    )


def token_sql(expression: str, key: bytes) -> str:
    """A DuckDB expression computing `vpa_token` of a VARCHAR expression."""
    return f"('{TOKEN_PREFIX}' || {_hmac_hex_sql(expression, key)})"


def token_key_sql(expression: str, key: bytes) -> str:
    """The same token as a 64-bit integer (UBIGINT): what the marts store and join on;
    `token_from_key_sql` turns it back into the `u_...` string."""
    return f"('0x' || {_hmac_hex_sql(expression, key)})::UBIGINT"


def token_from_key_sql(column: str) -> str:
    """The `u_` + 16 hex digits token of an integer token key."""
    return f"printf('{TOKEN_PREFIX}%0{TOKEN_HEX_CHARS}x', {column})"


def register_token_macro(con: duckdb.DuckDBPyConnection, key: bytes) -> None:
    """Define `vpa_token(v)` on this connection (a temporary macro: works read-only too)."""
    con.execute(f"CREATE OR REPLACE TEMP MACRO vpa_token(v) AS {token_sql('v', key)}")
