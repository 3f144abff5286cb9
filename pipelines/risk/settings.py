"""Settings of the risk loop, importable without any ML library.

The Dagster resources read their defaults from `LoopSettings`, and definitions load in every run
process and in the UI: this module must stay free of scikit-learn, SciPy and friends.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoopSettings:
    """Windows of the training / evaluation protocol and of the hand-off to the transfer service."""

    test_days: int = 7
    delay_days: int = 7
    folds: int = 3
    maturity_days: int = 30
    hold_rate: float = 0.005
    review_capacity: int = 100
    # Decisions go to the transfer service only for transfers this recent: older ones settled
    # long ago and would only come back as 409.
    delivery_window_hours: float = 2.0
    random_state: int = 0
