"""Real-world figures shared across the simulator: India's states and the merchant categories.

Each table is what a tuning change edits: population and UPI adoption per state, and per
merchant category how many shops there are, how much traffic they take and what payments to
them look like.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.ledger import contract as c

# --- geography -------------------------------------------------------------------------------

# (ISO 3166-2:IN, population in millions, UPI adoption relative to the national average)
_STATES = (
    ("IN-UP", 241, 0.8),
    ("IN-MH", 126, 1.4),
    ("IN-BR", 128, 0.6),
    ("IN-WB", 100, 0.9),
    ("IN-MP", 87, 0.85),
    ("IN-TN", 77, 1.2),
    ("IN-RJ", 81, 0.9),
    ("IN-KA", 68, 1.5),
    ("IN-GJ", 71, 1.2),
    ("IN-AP", 53, 1.2),
    ("IN-OR", 46, 0.8),
    ("IN-TG", 38, 1.5),
    ("IN-KL", 35, 1.1),
    ("IN-JH", 40, 0.7),
    ("IN-AS", 36, 0.7),
    ("IN-PB", 31, 1.0),
    ("IN-CT", 30, 0.8),
    ("IN-HR", 30, 1.2),
    ("IN-DL", 21, 1.6),
    ("IN-JK", 14, 0.8),
    ("IN-UT", 12, 1.0),
    ("IN-HP", 7.5, 1.0),
    ("IN-TR", 4.2, 0.8),
    ("IN-ML", 3.3, 0.7),
    ("IN-MN", 3.2, 0.7),
    ("IN-NL", 2.2, 0.7),
    ("IN-GA", 1.6, 1.4),
    ("IN-AR", 1.6, 0.7),
    ("IN-PY", 1.6, 1.1),
    ("IN-DH", 1.3, 1.0),
    ("IN-MZ", 1.2, 0.8),
    ("IN-CH", 1.2, 1.5),
    ("IN-SK", 0.7, 0.9),
    ("IN-AN", 0.4, 0.9),
    ("IN-LA", 0.3, 0.8),
    ("IN-LD", 0.07, 0.8),
)
STATE_CODES = tuple(s[0] for s in _STATES)
STATE_P = np.array([s[1] * s[2] for s in _STATES])
STATE_P /= STATE_P.sum()

# --- merchant categories ---------------------------------------------------------------------


@dataclass(frozen=True)
class Mcc:
    """A merchant category: how many merchants, how much traffic, and what its payments look like."""

    code: str
    merchant_share: float
    volume_share: float
    national: bool  # a few big national merchants rather than many local shops
    median_rupees: float
    sigma: float
    rounding: tuple[float, float, float]  # share rounded to ₹100, to ₹10, with paise; rest ₹1
    channels: tuple[float, float, float]  # QR, INTENT, COLLECT
    favourite: float  # share of payments that go to one of the payer's regular merchants
    stems: tuple[str, ...]


# fmt: off
_MCC_ROWS = (
    # mcc, merchants, volume, national, median ₹, sigma, rounding (₹100, ₹10, paise),
    # channels (QR, INTENT, COLLECT), regulars, VPA stems
    ("5411", .24, .22, False, 230, .85, (.05, .30, .08), (.90, .10, 0), .80, ("kirana", "supermart", "generalstore", "provisions")),
    ("5812", .11, .10, False, 380, .75, (.05, .35, .05), (.85, .15, 0), .45, ("dhaba", "restaurant", "biryanihouse", "cafe")),
    ("5814", .09, .08, False, 90, .70, (0, .45, 0), (.95, .05, 0), .70, ("chaistall", "snacks", "juicecentre", "tiffins")),
    ("5499", .07, .045, False, 140, .75, (.02, .35, 0), (.93, .07, 0), .70, ("sweets", "dairy", "bakery", "fruits")),
    ("4814", .004, .08, True, 299, 0, (0, 0, 0), (.10, .72, .18), .95, ("recharge", "mobilepay", "prepaid")),
    ("4900", .008, .04, False, 1300, .70, (0, .05, .85), (.10, .60, .30), .95, ("powerbill", "electricity", "waterboard", "gasbill")),
    ("5541", .05, .07, False, 450, .60, (.55, .15, .10), (.90, .10, 0), .70, ("fuelstation", "petrolpump", "fillingstation")),
    ("5912", .06, .055, False, 320, .80, (.02, .20, .25), (.90, .10, 0), .65, ("medicals", "pharmacy", "chemist")),
    ("5651", .06, .04, False, 1100, .80, (.10, .40, 0), (.85, .15, 0), .30, ("fashion", "garments", "textiles", "boutique")),
    ("5732", .03, .015, False, 3500, 1.0, (.15, .30, 0), (.75, .25, 0), .20, ("electronics", "mobiles", "digital")),
    ("5399", .004, .10, True, 700, 1.0, (0, .15, .30), (.10, .75, .15), .60, ("shoponline", "megamart", "dealstore")),
    ("4121", .004, .06, True, 210, .60, (0, .10, 0), (.25, .75, 0), .85, ("cabs", "autoride", "bikeride")),
    ("4111", .004, .02, False, 45, .50, (0, .60, 0), (.80, .20, 0), .95, ("metro", "transit", "busticket")),
    ("8220", .02, .012, False, 9000, 1.0, (.40, .30, 0), (.35, .50, .15), .90, ("school", "academy", "college", "coaching")),
    ("8062", .02, .015, False, 2500, 1.2, (.20, .30, .10), (.70, .25, .05), .60, ("hospital", "clinic", "nursinghome", "diagnostics")),
    ("6300", .003, .01, True, 6000, .90, (0, .10, .50), (.05, .55, .40), .95, ("insurance", "lifecover", "healthcover")),
    ("7011", .01, .005, False, 3000, .80, (.20, .40, 0), (.60, .40, 0), .10, ("hotel", "residency", "lodge")),
    ("4722", .004, .008, True, 4500, 1.0, (0, .20, .30), (.10, .85, .05), .50, ("travels", "tours", "holidays")),
    ("6211", .002, .01, True, 5000, 1.3, (.60, .20, 0), (.05, .80, .15), .95, ("securities", "broking", "invest")),
    ("5999", .07, .03, False, 400, .90, (.05, .35, 0), (.88, .12, 0), .40, ("store", "traders", "enterprises", "agencies")),
)
# fmt: on
MCCS = tuple(Mcc(*row) for row in _MCC_ROWS)
MCC_CODES = (c.PERSON_MCC, *(m.code for m in MCCS))  # party mcc index 0 is a person
MCC_IDX = {m.code: i for i, m in enumerate(MCCS)}
MCC_VOLUME = np.array([m.volume_share for m in MCCS])
MCC_VOLUME /= MCC_VOLUME.sum()
MCC_MEDIAN = np.array([m.median_rupees for m in MCCS])
MCC_SIGMA = np.array([m.sigma for m in MCCS])
MCC_ROUNDING = np.cumsum(np.array([m.rounding for m in MCCS]), axis=1)
MCC_CHANNEL_CDF = np.cumsum(np.array([m.channels for m in MCCS]), axis=1)
MCC_CHANNEL_CDF /= MCC_CHANNEL_CDF[:, -1:]
MCC_FAVOURITE = np.array([m.favourite for m in MCCS])
MCC_LOCAL = np.array([not m.national for m in MCCS])
MCC_LIMIT = np.array(
    [c.P2M_LIMIT_PAISE if m.code in c.P2M_HIGH_LIMIT_MCCS else c.P2P_LIMIT_PAISE for m in MCCS],
    dtype=np.int64,
)
