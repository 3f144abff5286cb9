"""The feature block: one row per feature of FEATURE_NAMES, in created_at order, each written once."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from pipelines.features.definitions import FEATURE_NAMES
from pipelines.features.engine.events import Spans
from pipelines.features.engine.sorted_keys import Groups


class Out:
    """Feature columns in created_at order: one block allocated up front, each row written once.

    The families compute in their key's order and write through `put`, which puts each value
    back in row order (by the numba scatter kernel in big batches).
    """

    def __init__(
        self, n: int, block: np.ndarray | None = None, kernels: ModuleType | None = None
    ) -> None:
        self.block = np.empty((len(FEATURE_NAMES), n)) if block is None else block
        self.kernels = kernels  # the numba kernels, for big batches
        self.rows = {name: i for i, name in enumerate(FEATURE_NAMES)}
        self.done: set[str] = set()

    def column(self, name: str) -> np.ndarray:
        self.done.add(name)
        return self.block[self.rows[name]]

    def put(self, name: str, values: np.ndarray, perm: np.ndarray | None = None) -> None:
        """Values in created_at order, or in the order `perm` maps to it."""
        if perm is None:
            self.column(name)[:] = values
        elif self.kernels is not None:
            self.kernels.scatter(self.column(name), perm, values)
        else:
            self.column(name)[perm] = values

    def put_hours_since(self, name: str, g: Groups, spans: Spans) -> None:
        """Hours since the latest event of `spans` before each transfer; null if none."""
        column = self.column(name)
        column.fill(np.nan)
        if self.kernels is not None:
            self.kernels.hours_since(column, g.perm, g.time, spans.start, spans.stop, spans.time)
            return
        pos, hours = spans.hours(g)
        column[g.perm[pos]] = hours
