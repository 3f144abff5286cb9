"""The feature blocks: one row per feature of FEATURE_NAMES, in created_at order, each written once."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from pipelines.features.definitions import FEATURE_NAMES, WHOLE_NUMBER_FEATURES
from pipelines.features.engine.events import Spans
from pipelines.features.engine.sorted_keys import Groups

# The features of each block, in catalogue order: whole numbers in float32, the rest float64.
BLOCK_FEATURES: dict[type, tuple[str, ...]] = {
    np.float64: tuple(n for n in FEATURE_NAMES if n not in WHOLE_NUMBER_FEATURES),
    np.float32: tuple(n for n in FEATURE_NAMES if n in WHOLE_NUMBER_FEATURES),
}


class Out:
    """Feature columns in created_at order: two blocks (float64 and float32, `BLOCK_FEATURES`)
    allocated up front, each row written once.

    The families compute in their key's order and write through `put`, which puts each value
    back in row order (by the numba scatter kernel in big batches).
    """

    def __init__(
        self,
        n: int,
        blocks: dict[type, np.ndarray] | None = None,
        kernels: ModuleType | None = None,
    ) -> None:
        self.blocks = blocks or {
            dtype: np.empty((len(names), n), dtype=dtype) for dtype, names in BLOCK_FEATURES.items()
        }
        self.kernels = kernels  # the numba kernels, for big batches
        self.rows = {
            name: (self.blocks[dtype], i)
            for dtype, names in BLOCK_FEATURES.items()
            for i, name in enumerate(names)
        }
        self.done: set[str] = set()

    def column(self, name: str) -> np.ndarray:
        self.done.add(name)
        block, i = self.rows[name]
        return block[i]

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
