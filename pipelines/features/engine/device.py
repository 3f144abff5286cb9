"""Features of the payer's device (by payer_device_id), whoever pays from it: its fraud reports."""

from __future__ import annotations

import numpy as np

from pipelines.features.engine.inputs import Inputs
from pipelines.features.engine.labels import LABEL_WINDOWS, label_features
from pipelines.features.engine.output import Out
from pipelines.features.engine.sorted_keys import Clock, group
from pipelines.features.engine.windows import window_bounds


def device_features(inp: Inputs, h0: np.ndarray, h1: np.ndarray, clock: Clock, out: Out) -> None:
    """Device features, from the two hashes of payer_device_id (row order)."""
    g = group(h0, h1, inp.t)
    enc = clock.encode(g.gid, g.time)
    lo = window_bounds(clock, g, enc, LABEL_WINDOWS, out.kernels)
    label_features("device", g, enc, clock, inp, lo, out)
