"""Features of the transfer itself: its amount, payee type, channel and IST hour."""

from __future__ import annotations

import numpy as np

from pipelines.features.engine.inputs import CHANNELS, MERCHANT, Inputs, bit
from pipelines.features.engine.output import Out


def transfer_features(inp: Inputs, out: Out) -> None:
    out.put("amount_log", np.log1p(inp.amount / 100))
    out.put("payee_is_merchant", bit(inp.flags, MERCHANT))
    for i, name in enumerate(CHANNELS):
        out.put(f"channel_{name.lower()}", inp.channel == i)
    out.put("hour_ist", inp.hour)
    out.put("is_night_ist", inp.hour < 5)
