"""What the simulator counts in: microsecond time units and integer codes for the contract's enums.

Arrays carry codes, not strings: a code is an index into the contract's tuple (so nothing is
redefined here), and the writer turns codes back into contract strings only when it lands a file.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipelines.ledger import contract as c

# --- time ------------------------------------------------------------------------------------

SECOND = 1_000_000  # timestamps are int64 microseconds since the Unix epoch, UTC
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
HALF_HOUR = 30 * MINUTE
NEVER = np.iinfo(np.int64).max // 4  # "not in this lifetime", far enough from overflow

# --- contract enums --------------------------------------------------------------------------

_CHANNEL = {name: i for i, name in enumerate(c.CHANNELS)}
CHAT, QR, INTENT, COLLECT = (_CHANNEL[k] for k in ("CHAT", "QR", "INTENT", "COLLECT"))
_STATUS = {name: i for i, name in enumerate(c.TRANSFER_STATUSES)}
PENDING, SUCCESS, FAILED, REVERSED = (
    _STATUS[k] for k in ("PENDING", "SUCCESS", "FAILED", "REVERSED")
)
RC_CODES = tuple(c.NPCI_RESPONSE_CODES)
RC = {code: i for i, code in enumerate(RC_CODES)}
_EVENT = {name: i for i, name in enumerate(c.ACCOUNT_EVENT_TYPES)}
REGISTERED, BANK_LINKED, DEVICE_BOUND, SIM_CHANGED, PIN_RESET, DEREGISTERED = (
    _EVENT[k]
    for k in (
        "REGISTERED",
        "BANK_LINKED",
        "DEVICE_BOUND",
        "SIM_CHANGED",
        "PIN_RESET",
        "DEREGISTERED",
    )
)
# The typologies that turn: an account with a clean history that starts taking or sending fraud.
TURNING_TYPES = ("QR_SWAP", "DORMANT_MULE", "ATO_SAME_DEVICE")
# What the simulator writes as `fraud_type`: the contract's list, which is open ("..."), then the
# typologies that turn it does not list yet (so the list stays right once the contract has them).
FRAUD_TYPES = (*c.FRAUD_TYPES, *(t for t in TURNING_TYPES if t not in c.FRAUD_TYPES))
# Fraud type codes: 0 is legit, i + 1 is FRAUD_TYPES[i].
FRAUD_TYPE_CODE = {name: i + 1 for i, name in enumerate(FRAUD_TYPES)}
ATO, SE, MULE, MF, CS, QRS, DMULE, ATOSD = (
    FRAUD_TYPE_CODE[k]
    for k in (
        "ACCOUNT_TAKEOVER",
        "SOCIAL_ENGINEERING",
        "MULE",
        "MERCHANT_FRAUD",
        "COLLECT_SCAM",
        "QR_SWAP",
        "DORMANT_MULE",
        "ATO_SAME_DEVICE",
    )
)

# --- notes: code 0 is none; each group is a range of codes in NOTE_BASE ----------------------

_P2P_NOTES = (
    "rent",
    "dinner",
    "lunch",
    "chai",
    "petrol",
    "movie",
    "groceries",
    "thanks",
    "bday gift",
    "shagun",
    "loan",
    "return",
    "milk",
    "fees",
    "trip",
    "cab",
    "electricity",
    "for maa",
    "party",
    "emi",
    "gift",
    "kharcha",
    "🙏",
    "sabzi",
    "maid salary",
    "recharge",
)
_P2M_NOTES = ("order", "bill", "payment", "advance", "balance")
_SE_NOTES = (
    "refund",
    "cashback",
    "kyc update",
    "receive money",
    "prize claim",
    "customer care",
    "olx payment",
    "army officer advance",
    "processing fee",
    "verification",
)
_CS_NOTES = ("electricity bill pending", "kyc verification", "refund", "cashback credit")
_MULE_NOTES = ("task payment", "investment", "part time job", "trading deposit")
_NOTE_GROUPS = {
    "p2p": _P2P_NOTES,
    "p2m": _P2M_NOTES,
    "se": _SE_NOTES,
    "cs": _CS_NOTES,
    "mule": _MULE_NOTES,
}
NOTES = (None, *(note for group in _NOTE_GROUPS.values() for note in group))
# group -> (its first code, how many notes it has)
NOTE_BASE: dict[str, tuple[int, int]] = {}
_next = 1
for _name, _group in _NOTE_GROUPS.items():
    NOTE_BASE[_name] = (_next, len(_group))
    _next += len(_group)
del _next, _name, _group

# --- ids -------------------------------------------------------------------------------------


def encode(values: np.ndarray, alphabet: bytes, width: int, prefix: bytes = b"") -> pl.Series:
    """Fixed-width strings of `values` in base len(alphabet), without a Python loop per value."""
    v = np.asarray(values).astype(np.uint64)
    lut = np.frombuffer(alphabet, dtype=np.uint8)
    base = np.uint64(len(alphabet))
    out = np.empty((len(v), len(prefix) + width), dtype=np.uint8)
    if prefix:
        out[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    for i in range(len(prefix) + width - 1, len(prefix) - 1, -1):
        out[:, i] = lut[v % base]
        v = v // base
    return pl.Series(out.view(f"S{out.shape[1]}").ravel()).cast(pl.String)


B36 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
HEX = b"0123456789abcdef"
