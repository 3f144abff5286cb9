"""Every feature of a batch of transfers: the families run in turn, on two threads when big.

Big batches (a million rows or more) run the payee side on a second thread, map the output
block on a spare one (`memory.py`), and use numba kernels (`_kernels.py`) loaded while the
inputs are read; small ones (the single-transfer path above all) run inline in plain numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
import polars as pl

from pipelines.features.definitions import FEATURE_DTYPES, FEATURE_NAMES
from pipelines.features.engine.device import device_features
from pipelines.features.engine.inputs import EventTable, Inputs, event_table, prepare
from pipelines.features.engine.memory import populated_block, release_row
from pipelines.features.engine.output import BLOCK_FEATURES, Out
from pipelines.features.engine.pair import pair_features
from pipelines.features.engine.payee import Onward, passthrough, payee_features
from pipelines.features.engine.payer import (
    new_device,
    payer_counterparty_features,
    payer_features,
)
from pipelines.features.engine.sorted_keys import Clock, Groups, Keys, group
from pipelines.features.engine.transfer import transfer_features

_T = TypeVar("_T")

BIG_BATCH = 1_000_000  # rows from which a batch uses threads, kernels and a mapped block


def compute_features(
    transfers: pl.DataFrame,
    account_events: pl.DataFrame,
    labels: pl.DataFrame,
    *,
    targets: pl.Series | None = None,
) -> pl.DataFrame:
    """Every feature of FEATURE_NAMES for each transfer, point in time (see the engine's doc).

    `transfers` has at least TRANSFER_COLUMNS, one row per transfer_id (its current state, as
    in ledger.transfers). Returns transfer_id plus one column per feature (of its
    `FEATURE_DTYPES` type), null where unknown, one row per transfer in created_at order (ties in input order). `targets` limits
    the output to those transfer_ids; every transfer still counts as history.
    """
    big = transfers.height >= BIG_BATCH
    with ThreadPoolExecutor(2) as pool:
        ready = None
        if big:  # made ready while the inputs are read
            blocks = pool.submit(_populated_blocks, transfers.height)
            ready = blocks, pool.submit(_big_batch_kernels)
        inp = prepare(transfers, labels)
        if inp.t.size == 0:
            return pl.DataFrame(schema={"transfer_id": pl.String, **FEATURE_DTYPES})
        blocks = _compute(inp, account_events, ready)
    columns = {"transfer_id": inp.transfer_id}
    for dtype, names in BLOCK_FEATURES.items():
        for i, name in enumerate(names):
            # A copy of its own: Polars may wrap a numpy row without copying it, and the row's
            # pages are given back (read as zeros) right after.
            columns[name] = pl.Series(name, blocks[dtype][i].copy(), nan_to_null=True)
            release_row(blocks[dtype], i)
    frame = pl.DataFrame([columns[name] for name in ("transfer_id", *FEATURE_NAMES)])
    if targets is not None:
        frame = frame.filter(pl.col("transfer_id").is_in(targets.implode()))
    return frame


def _compute(
    inp: Inputs,
    account_events: pl.DataFrame,
    big: tuple[Future[dict[type, np.ndarray]], Future[ModuleType]] | None = None,
) -> dict[type, np.ndarray]:
    """Every feature, in created_at order, in the blocks of `output.BLOCK_FEATURES`.

    The payer side runs on this thread and, in big batches, the payee side on a second one, in
    three steps joined in turn (each side needs the other's result of the step before). numpy,
    Polars and the kernels release the GIL in their loops, so the two sides share the cores.
    """
    t, h = inp.t, inp.hashes
    clock = Clock.around(t)
    out = Out(t.size) if big is None else Out(t.size, big[0].result(), big[1].result())
    with _Inline() if big is None else ThreadPoolExecutor(max_workers=1) as pool:

        def payee_group() -> tuple[Groups, EventTable]:
            return group(h["payee_vpa_0"], h["payee_vpa_1"], t), event_table(account_events)

        payee_side = pool.submit(payee_group)
        transfer_features(inp, out)
        payer = group(h["payer_vpa_0"], h["payer_vpa_1"], t)
        payer_keys = Keys.of(payer, h.pop("payer_vpa_0"), h.pop("payer_vpa_1"))
        payee, events = payee_side.result()
        payee_keys = Keys.of(payee, h.pop("payee_vpa_0"), h.pop("payee_vpa_1"))

        def payee_side_features() -> tuple[np.ndarray, Onward]:
            facts = pair_features(payer, payee, inp, out)
            onward = payee_features(
                payee, payer, inp, facts, clock, events, payee_keys, payer_keys, out
            )
            return facts, onward

        payee_side = pool.submit(payee_side_features)
        payer_enc, sent, lo24 = payer_features(payer, inp, clock, events, payer_keys, out)
        out.put("payer_new_device", new_device(payer, inp), payer.perm)
        device = h.pop("payer_device_id_0"), h.pop("payer_device_id_1")
        facts, onward = payee_side.result()
        h.clear()

        def payee_side_last() -> None:
            passthrough(payee, payer, payer_enc, sent, onward, clock, out)
            device_features(inp, *device, clock, out)

        payee_side = pool.submit(payee_side_last)
        payer_counterparty_features(payer, facts, lo24, out)
        payee_side.result()
    missing = set(FEATURE_NAMES) ^ out.done
    assert not missing, f"features computed and catalogued differ: {sorted(missing)}"
    return out.blocks


class _Inline:
    """An executor that runs each task when submitted: small batches (the single-transfer
    path above all) gain nothing from a second thread but its start-up."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        done: Future[_T] = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # handed to the caller, as a pool would
            done.set_exception(exc)
        return done


def _populated_blocks(rows: int) -> dict[type, np.ndarray]:
    return {
        dtype: populated_block(len(names), rows, dtype) for dtype, names in BLOCK_FEATURES.items()
    }


def _big_batch_kernels() -> ModuleType:
    """The numba kernels, loaded (numba's import and the cached machine code take ~1 s)."""
    from pipelines.features.engine import _kernels

    return _kernels
