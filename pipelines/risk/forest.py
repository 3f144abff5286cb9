"""A fitted HistGradientBoosting ensemble compiled into flat arrays for fast single-row scoring.

scikit-learn's own predict starts an OpenMP team per call: milliseconds for one row. Here the same
trees are renumbered so that a left child always follows its parent, packed two float64 per node,
and walked block by block of rows with a fixed number of steps per tree (leaves loop onto
themselves), eight rows interleaved. The kernel is compiled with numba when it is installed;
without numba the same arrays are walked with numpy. On this project's 2-core machine one row takes
~25 µs against sklearn's 1-3 ms, and a batch of 1M rows goes at sklearn's own rate, not faster
(`benchmarks/bench_scoring.py` prints both).

scikit-learn has no public view of a HistGradientBoosting model's trees, so they are read through
treelite (`treelite.sklearn.import_model`, then its documented field accessors): treelite follows
scikit-learn's releases, this module uses only the public APIs of both. A compiled forest is then
checked against the estimator's own `decision_function` on rows built around every split
threshold, and compiling fails loudly (`UnsupportedModelError`, naming both versions) if a
scikit-learn / treelite pair ever reads a model differently.

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
_PROBE_ROWS = 4_096  # rows of the check against sklearn at compile time (a few ms)
_CHECK_TOLERANCE = 1e-9  # log-odds; the walk is bit-identical, so any gap means a misread model

# treelite's enums (its model spec, v4), as its field accessors return them.
_LEAF_NODE, _NUMERICAL_TEST = 0, 1
_LESS_OR_EQUAL = 3
_FLOAT64 = 3
_BINARY_CLASSIFIER = 0

_kernel: Any = None
_kernel_loaded = False


class UnsupportedModelError(ValueError):
    """A model the compiled forest cannot score exactly as its library does."""


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
        """Compile a fitted binary `HistGradientBoostingClassifier` (numeric features only),
        checked against its `decision_function`."""
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.utils.validation import check_is_fitted

        if not isinstance(estimator, HistGradientBoostingClassifier):
            raise UnsupportedModelError(
                f"only a HistGradientBoostingClassifier compiles, got {type(estimator).__name__}"
            )
        check_is_fitted(estimator)
        if len(estimator.classes_) != 2:
            raise UnsupportedModelError(
                f"only binary classifiers compile; this one has {len(estimator.classes_)} classes"
            )
        if estimator.is_categorical_ is not None and estimator.is_categorical_.any():
            raise UnsupportedModelError(
                "categorical features are not supported by the compiled forest"
            )
        import treelite  # at fit time only: scoring needs numpy (and numba) alone

        try:
            imported = treelite.sklearn.import_model(estimator)
        except Exception as exc:
            raise UnsupportedModelError(
                f"treelite could not read the model ({_versions()}): {exc}"
            ) from exc
        forest = cls.from_treelite(imported)
        forest.check_against(estimator)
        return forest

    @classmethod
    def from_treelite(cls, model: Any) -> CompiledForest:
        """Compile a binary-classification `treelite.Model` whose trees add up log-odds: float64
        `<=` splits on numeric features, one float64 value per leaf."""
        header = model.get_header_accessor()
        expected = {
            "task_type": _BINARY_CLASSIFIER,
            "num_target": 1,
            "num_class": 1,
            "average_tree_output": 0,
            "threshold_type": _FLOAT64,
            "leaf_output_type": _FLOAT64,
        }
        found = {name: header.get_field(name).tolist() for name in expected}
        if any(found[name] != [value] for name, value in expected.items()) or (
            header.get_field("postprocessor") != "sigmoid"
        ):
            raise UnsupportedModelError(
                f"only a binary classifier summing float64 trees into log-odds compiles; "
                f"the treelite model has {found}, postprocessor "
                f"{header.get_field('postprocessor')!r} ({_versions()})"
            )
        n_features = int(model.num_feature)
        if n_features >= MAX_FEATURES:
            raise UnsupportedModelError(
                f"at most {MAX_FEATURES - 1} features compile, got {n_features}"
            )
        words: list[np.ndarray] = []
        thresholds: list[np.ndarray] = []
        values: list[np.ndarray] = []
        roots: list[int] = []
        depths: list[int] = []
        offset = 0
        for tree_id in range(model.num_tree):
            tree = model.get_tree_accessor(tree_id)
            kind = tree.get_field("node_type")
            leaf = kind == _LEAF_NODE
            if not np.all(leaf | (kind == _NUMERICAL_TEST)):
                raise UnsupportedModelError(
                    "categorical splits are not supported by the compiled forest"
                )
            if np.any(tree.get_field("cmp")[~leaf] != _LESS_OR_EQUAL):
                raise UnsupportedModelError(f"tree {tree_id} has a split other than x <= t")
            if tree.get_field("leaf_vector").size:
                raise UnsupportedModelError(f"tree {tree_id} has vector leaves")
            left = tree.get_field("cleft").astype(np.int64)
            right = tree.get_field("cright").astype(np.int64)
            order, depth = _preorder(left, right, leaf)
            n = len(order)
            new_id = np.empty(n, dtype=np.int64)
            new_id[order] = np.arange(n) + offset
            leaf = leaf[order]
            right = np.where(leaf, new_id[order], new_id[right[order]])  # leaves loop onto self
            feature = np.where(leaf, 0, tree.get_field("split_index")[order]).astype(np.int64)
            missing_right = ~leaf & (tree.get_field("default_left")[order] == 0)
            word = (
                (right << (_FEATURE_BITS + 2))
                | (feature << 2)
                | (missing_right.astype(np.int64) << 1)
                | leaf.astype(np.int64)
            )
            words.append(word.astype(np.float64))
            thresholds.append(np.where(leaf, 0.0, tree.get_field("threshold")[order]))
            values.append(np.where(leaf, tree.get_field("leaf_value")[order], 0.0))
            roots.append(offset)
            depths.append(depth)
            offset += n
        nodes = np.empty((offset, 2), dtype=np.float64)
        nodes[:, 0] = np.concatenate(thresholds)
        nodes[:, 1] = np.concatenate(words)
        return cls(
            nodes=nodes,
            values=np.concatenate(values).astype(np.float64),
            roots=np.asarray(roots, dtype=np.int64),
            depths=np.asarray(depths, dtype=np.int64),
            baseline=float(header.get_field("base_scores")[0]),
            n_features=n_features,
        )

    def check_against(self, estimator: Any, rows: int = _PROBE_ROWS, seed: int = 0) -> None:
        """Raise `UnsupportedModelError` unless this forest's log-odds equal the estimator's
        `decision_function` on `rows` rows sitting on, just above and around every threshold."""
        probe = self.probe_rows(rows, seed=seed)
        expected = np.asarray(estimator.decision_function(probe), dtype=np.float64)
        worst = float(np.max(np.abs(self.raw_predict(probe, n_threads=1) - expected)))
        if not worst <= _CHECK_TOLERANCE:  # NaN fails too
            raise UnsupportedModelError(
                f"the compiled forest's log-odds differ from {type(estimator).__name__}"
                f".decision_function by up to {worst:.3g} on {rows} probe rows ({_versions()}): "
                f"this pair reads the model differently; fit the risk model with "
                f"fast_predict=False to score through scikit-learn, or pin versions that pass "
                f"tests/test_forest.py"
            )

    def probe_rows(self, rows: int, seed: int = 0) -> np.ndarray:
        """Random rows whose values are split thresholds, the next float above them, NaN or
        ±inf, feature by feature: every split goes each way, and missing values go their way."""
        rng = np.random.default_rng(seed)
        word = self.nodes[:, 1].astype(np.int64)
        split = (word & 1) == 0
        feature = (word >> 2) & (MAX_FEATURES - 1)
        X = np.empty((rows, self.n_features), dtype=np.float64)
        for j in range(self.n_features):
            t = np.unique(self.nodes[split & (feature == j), 0])
            t = t[np.isfinite(t)]
            special = np.array([np.nan, -np.inf, np.inf, 0.0])
            X[:, j] = rng.choice(np.concatenate([t, np.nextafter(t, np.inf), special]), rows)
        return X

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


def _versions() -> str:
    from importlib.metadata import version

    return f"scikit-learn {version('scikit-learn')}, treelite {version('treelite')}"


def numba_available() -> bool:
    """Whether the compiled (numba) kernel is in use rather than the numpy fallback."""
    return _compiled_kernel() is not None


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _preorder(left: np.ndarray, right: np.ndarray, leaf: np.ndarray) -> tuple[np.ndarray, int]:
    """Node ids of one tree in depth-first, left-first order (so left child = parent + 1), and
    the depth of its deepest leaf."""
    order: list[int] = []
    deepest = 0
    stack = [(0, 0)]
    while stack:
        node, depth = stack.pop()
        order.append(node)
        if leaf[node]:
            deepest = max(deepest, depth)
        else:
            stack.append((int(right[node]), depth + 1))
            stack.append((int(left[node]), depth + 1))
    return np.asarray(order, dtype=np.int64), deepest


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
