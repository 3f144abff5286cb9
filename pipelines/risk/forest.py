"""A fitted HistGradientBoosting ensemble compiled into flat arrays for fast batch and single-row scoring.

scikit-learn's own predict walks every tree over every row in turn (the whole matrix streams
through memory once per tree) and starts an OpenMP team per call: ~50-100k rows/s in batch and
milliseconds for one row on this project's machines. Here the same trees are renumbered so that a
left child always follows its parent, packed two float64 per node, and walked block by block of
rows with a fixed number of steps per tree (leaves loop onto themselves), eight rows interleaved so
the CPU overlaps their memory loads. The kernel is compiled with numba when it is installed
(several times faster than sklearn); without numba the same arrays are walked with numpy.

Predictions are bit-identical to `HistGradientBoostingClassifier.decision_function`: same float64
comparisons, same missing-value directions, same summation order (baseline, then tree by tree).
"""

from __future__ import annotations

import itertools
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

# Node word layout (an integer held exactly in a float64): right child << 14 | feature << 2 |
# missing-goes-right << 1 | is-leaf. 12 feature bits, node ids up to 2**39.
_FEATURE_BITS = 12
MAX_FEATURES = 1 << _FEATURE_BITS
_BLOCK_ROWS = 256  # rows walked together through all trees: ~80 KB of X for 40 features
_PARALLEL_MIN_ROWS = 20_000  # below this a thread pool costs more than it saves

_kernel: Any = None
_kernel_loaded = False


@dataclass(frozen=True)
class CompiledForest:
    """A binary-classification tree ensemble as flat arrays; `raw_predict` returns log-odds."""

    nodes: np.ndarray  # (n_nodes, 2) float64: threshold, packed node word
    values: np.ndarray  # (n_nodes,) float64 leaf values (0 for internal nodes)
    roots: np.ndarray  # (n_trees,) int64
    depths: np.ndarray  # (n_trees,) int64: deepest leaf of each tree = steps to walk it
    baseline: float
    n_features: int

    @classmethod
    def from_hist_gradient_boosting(cls, estimator: Any) -> CompiledForest:
        """Compile a fitted binary `HistGradientBoostingClassifier` (numeric features only)."""
        predictors = getattr(estimator, "_predictors", None)
        if predictors is None:
            raise ValueError("the HistGradientBoostingClassifier is not fitted")
        if estimator.n_trees_per_iteration_ != 1:
            raise ValueError(
                f"only binary classifiers compile; this one has "
                f"{estimator.n_trees_per_iteration_} trees per iteration"
            )
        n_features = int(estimator.n_features_in_)
        if n_features >= MAX_FEATURES:
            raise ValueError(f"at most {MAX_FEATURES - 1} features compile, got {n_features}")
        words: list[np.ndarray] = []
        thresholds: list[np.ndarray] = []
        values: list[np.ndarray] = []
        roots: list[int] = []
        depths: list[int] = []
        offset = 0
        for iteration in predictors:
            tree = iteration[0].nodes
            if tree["is_categorical"].any():
                raise ValueError("categorical splits are not supported by the compiled forest")
            order = _preorder(tree)
            new_id = np.empty(len(tree), dtype=np.int64)
            new_id[order] = np.arange(len(tree)) + offset
            t = tree[order]
            leaf = t["is_leaf"].astype(bool)
            right = np.where(leaf, new_id[order], new_id[t["right"]])  # leaves loop onto self
            feature = np.where(leaf, 0, t["feature_idx"]).astype(np.int64)
            missing_right = (~leaf) & (t["missing_go_to_left"] == 0)
            word = (
                (right << (_FEATURE_BITS + 2))
                | (feature << 2)
                | (missing_right.astype(np.int64) << 1)
                | leaf.astype(np.int64)
            )
            words.append(word.astype(np.float64))
            thresholds.append(np.where(leaf, 0.0, t["num_threshold"]))
            values.append(np.where(leaf, t["value"], 0.0))
            roots.append(offset)
            depths.append(int(t["depth"].max()))
            offset += len(tree)
        nodes = np.empty((offset, 2), dtype=np.float64)
        nodes[:, 0] = np.concatenate(thresholds)
        nodes[:, 1] = np.concatenate(words)
        return cls(
            nodes=nodes,
            values=np.concatenate(values).astype(np.float64),
            roots=np.asarray(roots, dtype=np.int64),
            depths=np.asarray(depths, dtype=np.int64),
            baseline=float(np.asarray(estimator._baseline_prediction).ravel()[0]),
            n_features=n_features,
        )

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    def raw_predict(self, X: np.ndarray, n_threads: int | None = None) -> np.ndarray:
        """Log-odds for each row of `X` (float64, NaN = missing), as the sklearn model gives."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(
                f"expected a 2-D array with {self.n_features} feature columns, got shape {X.shape}"
            )
        out = np.empty(X.shape[0], dtype=np.float64)
        kernel = _compiled_kernel()
        if kernel is None:
            return _walk_numpy(self, X, out)
        threads = n_threads or _available_cpus()
        n = X.shape[0]
        if threads <= 1 or n < _PARALLEL_MIN_ROWS:
            kernel(X, self.nodes, self.values, self.roots, self.depths, self.baseline, out)
            return out
        # The kernel releases the GIL: plain threads over contiguous slices share the arrays.
        bounds = np.linspace(0, n, threads + 1).astype(np.int64)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            jobs = [
                pool.submit(
                    kernel,
                    X[lo:hi],
                    self.nodes,
                    self.values,
                    self.roots,
                    self.depths,
                    self.baseline,
                    out[lo:hi],
                )
                for lo, hi in itertools.pairwise(bounds)
            ]
            for job in jobs:
                job.result()
        return out


def numba_available() -> bool:
    """Whether the compiled (numba) kernel is in use rather than the numpy fallback."""
    return _compiled_kernel() is not None


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _preorder(tree: np.ndarray) -> np.ndarray:
    """Node ids of one tree in depth-first, left-first order (so left child = parent + 1)."""
    order: list[int] = []
    stack = [0]
    while stack:
        node = stack.pop()
        order.append(node)
        if not tree["is_leaf"][node]:
            stack.append(int(tree["right"][node]))
            stack.append(int(tree["left"][node]))
    return np.asarray(order, dtype=np.int64)


def _walk_numpy(forest: CompiledForest, X: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The same walk, vectorised over rows tree by tree: slow but needs only numpy."""
    out[:] = forest.baseline
    rows = np.arange(X.shape[0])
    thr, word = forest.nodes[:, 0], forest.nodes[:, 1].astype(np.int64)
    for root, depth in zip(forest.roots, forest.depths, strict=True):
        node = np.full(X.shape[0], root, dtype=np.int64)
        for _ in range(depth):
            w = word[node]
            x = X[rows, (w >> 2) & (MAX_FEATURES - 1)]
            go_right = (x > thr[node]) | (np.isnan(x) & ((w & 2) != 0)) | ((w & 1) != 0)
            node = np.where(go_right, w >> (_FEATURE_BITS + 2), node + 1)
        out += forest.values[node]
    return out


def _compiled_kernel() -> Any:
    """The numba kernel, compiled (or loaded from numba's cache) on first use; None without numba."""
    global _kernel, _kernel_loaded
    if not _kernel_loaded:
        _kernel = _build_kernel()
        _kernel_loaded = True
    return _kernel


def _build_kernel() -> Any:
    try:
        from pipelines.risk import _forest_kernel
    except ImportError:  # numba not installed
        return None
    except Exception as exc:  # e.g. numba cannot write its cache anywhere: stay correct, slower
        warnings.warn(
            f"numba kernel unavailable ({exc!r}); scoring with the numpy fallback",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return _forest_kernel.walk
