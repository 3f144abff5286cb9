"""The same features in idiomatic Polars: rolling windows by time per key, and as-of joins.

A third formulation of every feature of `definitions.py`, as a Polars user would write it:
`expr.rolling_sum_by("created_at", window_size=w, closed="left").over(key)` (and its mean,
median, std, min and max siblings) for the window [t - w, t), where closed="left" leaves out
the transfer itself and its ties; `DataFrame.rolling(..., group_by=key, closed="left")` for
distinct counterparties; `join_asof(..., allow_exact_matches=False)` for account events and
the payee's fraud reports ever; a window as long as the ledger for lifetime features. Recent
fraud reports and fraud rates of the payer, the payee and the device are the same rolling
windows over one time line per key that holds its transfers and, for each of its reported
frauds, a row at the moment it became known and +1 / -1 marks that count it in the rates of
the windows it was made in (see `_label_recency`). The benchmark runs it as the strongest
plain baseline and the tests check that it agrees with the engine. It is slower than
`engine.compute_features` on millions of rows: use the engine.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from pipelines.features.definitions import FEATURE_NAMES
from pipelines.features.engine.inputs import CHANNELS, DAY, HOUR
from pipelines.features.engine.labels import LABEL_WINDOWS
from pipelines.features.engine.pair import DISTINCT_WINDOWS
from pipelines.features.engine.payee import FRAUD_RATE_PRIOR
from pipelines.features.engine.payer import PAYER_EVENTS, PAYER_WINDOWS
from pipelines.india_time import IST_TIME_ZONE

PAYER, PAYEE, PAIR = "payer_vpa", "payee_vpa", ("payer_vpa", "payee_vpa")
DEVICE = "payer_device_id"
LABEL_KEYS = {"payer": PAYER, "payee": PAYEE, "device": DEVICE}
LABEL_SPANS = {w: timedelta(microseconds=us) for w, us in LABEL_WINDOWS.items()}  # 1d = 24 h
_OK = pl.col("status").is_in(["SUCCESS", "REVERSED"])
_FAILED = pl.col("status") == "FAILED"


def _utc(column: str) -> pl.Expr:
    """A Datetime column as naive UTC microseconds, whatever its zone (naive is taken as UTC)."""
    return pl.from_epoch(pl.col(column).dt.epoch("us"), time_unit="us").alias(column)


def _prior(column: str, how: str, window: str | timedelta, key: str | tuple[str, ...]) -> pl.Expr:
    """`how` (sum, mean, median, std, min, max) of the column over the key's [t - window, t)."""
    rolling = getattr(pl.col(column), f"rolling_{how}_by")
    return rolling("created_at", window_size=window, closed="left").over(key)


def _share(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    return pl.when(den > 0).then(num / den)


def _hours_since(moment: str) -> pl.Expr:
    return (pl.col("created_at") - pl.col(moment)).dt.total_microseconds() / HOUR


def _prior_rank(key: str | tuple[str, ...]) -> pl.Expr:
    """Transfers of the key strictly before this one, ever."""
    return pl.col("created_at").rank("min").over(key) - 1


def _transfers(transfers: pl.DataFrame) -> pl.LazyFrame:
    """Transfers in created_at order (UTC), with the per-transfer facts windows add up."""
    hour = pl.col("created_at").dt.replace_time_zone("UTC").dt.convert_time_zone(IST_TIME_ZONE)
    return (
        transfers.lazy()
        .with_columns(_utc("created_at"), pl.col("amount_paise").cast(pl.Int64))
        .sort("created_at", maintain_order=True)
        .with_columns(
            one=pl.lit(1),
            ok_amount=pl.when(_OK).then(pl.col("amount_paise")),
            sent=pl.when(_OK).then(pl.col("amount_paise")).otherwise(0),
            failed=_FAILED.cast(pl.Int64),
            pin_fail=(_FAILED & pl.col("response_code").is_in(["ZM", "Z6"])).fill_null(False),
            funds_fail=(_FAILED & (pl.col("response_code") == "Z9")).fill_null(False),
            hour_ist=hour.dt.hour(),
            at_us=pl.col("created_at").dt.epoch("us"),
            first_to_payee=pl.col("created_at") == pl.col("created_at").min().over(PAIR),
        )
        .with_columns(night=(pl.col("hour_ist") < 5).cast(pl.Int64))
    )


def _transfer_features() -> list[pl.Expr]:
    return [
        (pl.col("amount_paise") / 100).log1p().alias("amount_log"),
        (pl.col("payee_type") == "MERCHANT").alias("payee_is_merchant"),
        *((pl.col("channel") == c).alias(f"channel_{c.lower()}") for c in CHANNELS),
        (pl.col("hour_ist") < 5).alias("is_night_ist"),
    ]


def _payer_features() -> list[pl.Expr]:
    count = {w: _prior("one", "sum", w, PAYER) for w in PAYER_WINDOWS}
    good = {how: _prior("ok_amount", how, "30d", PAYER) for how in ("median", "mean", "std")}
    # All equal (max == min) is null: a float std there may be noise instead of 0.
    varied = _prior("ok_amount", "max", "30d", PAYER) > _prior("ok_amount", "min", "30d", PAYER)
    return [
        *(count[w].alias(f"payer_count_{w}") for w in PAYER_WINDOWS),
        *(
            (_prior("amount_paise", "sum", w, PAYER) / 100).alias(f"payer_amount_{w}")
            for w in PAYER_WINDOWS
        ),
        (pl.col("amount_paise") / good["median"]).alias("payer_amount_ratio_median_30d"),
        pl.when(varied)
        .then((pl.col("amount_paise") - good["mean"]) / good["std"])
        .alias("payer_amount_zscore_30d"),
        (pl.col("created_at") == pl.col("created_at").min().over(PAYER, "payer_device_id")).alias(
            "payer_new_device"
        ),
        _share(_prior("first_to_payee", "sum", "24h", PAYER), count["24h"]).alias(
            "payer_new_payee_share_24h"
        ),
        _share(_prior("night", "sum", "30d", PAYER), count["30d"]).alias("payer_night_share_30d"),
        _prior("pin_fail", "sum", "24h", PAYER).alias("payer_failed_pin_24h"),
        _prior("funds_fail", "sum", "24h", PAYER).alias("payer_failed_funds_24h"),
    ]


def _payee_features() -> list[pl.Expr]:
    """Payee features a window expression gives; the rest need joins (see below)."""
    count = {w: _prior("one", "sum", w, PAYEE) for w in ("24h", "7d", "8d")}
    return [
        _prior("sent", "sum", "24h", PAYEE).alias("inbound_24h"),
        (count["24h"] / ((count["8d"] - count["24h"]) / 7 + 1)).alias("payee_volume_spike"),
        _share(_prior("failed", "sum", "7d", PAYEE), count["7d"]).alias("payee_decline_rate_7d"),
        _share(_prior("first_to_payee", "sum", "7d", PAYEE), count["7d"]).alias(
            "payee_new_payer_share_7d"
        ),
        (pl.col("amount_paise") / _prior("ok_amount", "mean", "30d", PAYEE)).alias(
            "payee_amount_ratio_mean_30d"
        ),
        _prior_rank(PAYEE).alias("payee_prior"),
    ]


def _pair_features(ever: timedelta) -> list[pl.Expr]:
    prior = _prior_rank(PAIR)
    mean = _prior("amount_paise", "sum", ever, PAIR) / prior
    last = _prior("at_us", "max", ever, PAIR)
    return [
        prior.alias("pair_prior_count"),
        (prior == 0).alias("pair_is_first"),
        pl.when(prior > 0).then(pl.col("amount_paise") / mean).alias("pair_amount_ratio_mean"),
        ((pl.col("at_us") - last) / DAY).alias("pair_days_since_last"),
    ]


def _distinct(t: pl.LazyFrame, key: str, other: str, window: str, name: str) -> pl.LazyFrame:
    """Distinct `other` values in the key's [t - window, t), per (key, created_at)."""
    return (
        t.rolling("created_at", period=window, closed="left", group_by=key)
        .agg(pl.col(other).n_unique().alias(name))
        .unique([key, "created_at"])
    )


def _passed_on(t: pl.LazyFrame) -> pl.LazyFrame:
    """Per transfer: what its payee sent successfully as a payer in the 24 hours before.

    Each transfer asks at its payee with a silent row (sent 0) among the rows of what each
    VPA sent, then a 24-hour rolling sum per VPA.
    """
    sent = t.select(
        pl.col(PAYER).alias("vpa"), "created_at", "sent", pl.lit(None, pl.String).alias("asking")
    )
    asks = t.select(
        pl.col(PAYEE).alias("vpa"),
        "created_at",
        pl.lit(0, pl.Int64).alias("sent"),
        pl.col("transfer_id").alias("asking"),
    )
    return (
        pl.concat([sent, asks])
        .sort("created_at")
        .with_columns(sent_24h=_prior("sent", "sum", "24h", "vpa"))
        .filter(pl.col("asking").is_not_null())
        .select(pl.col("asking").alias("transfer_id"), "sent_24h")
    )


def _first_seen(t: pl.LazyFrame) -> pl.LazyFrame:
    """Per VPA (as payee_vpa): its first transfer as payer or payee."""
    both = pl.concat(
        [t.select(pl.col(PAYER).alias(PAYEE), "created_at"), t.select(PAYEE, "created_at")]
    )
    return both.group_by(PAYEE).agg(pl.col("created_at").min().alias("first_seen"))


def _frauds(t: pl.LazyFrame, labels: pl.DataFrame) -> pl.LazyFrame:
    """Each reported transfer: its keys, created_at and known_at, max(its created_at, its
    first FRAUD report)."""
    return (
        labels.lazy()
        .filter(pl.col("label") == "FRAUD")
        .with_columns(_utc("reported_at"))
        .group_by("transfer_id")
        .agg(pl.col("reported_at").min())
        .join(t.select("transfer_id", *LABEL_KEYS.values(), "created_at"), on="transfer_id")
        .select(
            *LABEL_KEYS.values(),
            "created_at",
            known_at=pl.max_horizontal("created_at", "reported_at"),
        )
    )


def _fraud_reports(frauds: pl.LazyFrame) -> pl.LazyFrame:
    """Per payee, the running count of its reported transfers, each counting from its
    known_at on, sorted by that moment."""
    return (
        frauds.group_by(PAYEE, "known_at")
        .len()
        .sort("known_at")
        .select(PAYEE, "known_at", reports=pl.col("len").cum_sum().over(PAYEE))
    )


def _label_recency(
    t: pl.LazyFrame, frauds: pl.LazyFrame, entity: str, ever: timedelta
) -> pl.LazyFrame:
    """Per transfer: the entity's fraud reports and fraud rates in each window, and the days
    since its latest report.

    One timeline per key: each transfer asks at its created_at; each fraud is a row at its
    known_at (a report), where it also starts counting (enter_w = 1) in the rate of the w
    windows it was made in, until created_at + w, where a row takes it out (enter_w = -1).
    So a fraud made at c and known at k counts in the rate of the transfers at t with
    k < t <= c + w, those whose window [t - w, t) holds c and which come after the report.
    """
    key = LABEL_KEYS[entity]
    none = {"transfer_id": pl.lit(None, pl.String), "known_us": pl.lit(None, pl.Int64)}
    asks = t.select(
        pl.col(key).alias("key"),
        "created_at",
        "transfer_id",
        known_us=none["known_us"],
        **{f"enter_{w}": pl.lit(0, pl.Int64) for w in LABEL_SPANS},
    )
    before_end = {
        w: pl.col("known_at") < pl.col("created_at") + span for w, span in LABEL_SPANS.items()
    }
    known = frauds.select(
        pl.col(key).alias("key"),
        pl.col("known_at").alias("created_at"),
        transfer_id=none["transfer_id"],
        known_us=pl.col("known_at").dt.epoch("us"),
        **{f"enter_{w}": before_end[w].cast(pl.Int64) for w in LABEL_SPANS},
    )
    leave = [
        frauds.filter(before_end[w]).select(
            pl.col(key).alias("key"),
            pl.col("created_at") + span,
            **none,
            **{f"enter_{v}": pl.lit(-1 if v == w else 0, pl.Int64) for v in LABEL_SPANS},
        )
        for w, span in LABEL_SPANS.items()
    ]
    asking = pl.col("transfer_id").is_not_null()
    reported = pl.col("known_us").is_not_null()
    return (
        pl.concat([asks, known, *leave])
        .sort("created_at")
        .with_columns(asking=asking, reported=reported)
        .select(
            "transfer_id",
            *(
                _prior("reported", "sum", span, "key").alias(f"{entity}_fraud_reports_{w}")
                for w, span in LABEL_SPANS.items()
            ),
            *(
                _share(
                    _prior(f"enter_{w}", "sum", ever, "key"),
                    _prior("asking", "sum", span, "key"),
                ).alias(f"{entity}_fraud_rate_{w}")
                for w, span in LABEL_SPANS.items()
            ),
            (
                (pl.col("created_at").dt.epoch("us") - _prior("known_us", "max", ever, "key")) / DAY
            ).alias(f"{entity}_days_since_fraud_report"),
        )
        .filter(asking)
    )


def _latest_before(frame: pl.LazyFrame, right: pl.LazyFrame, on: str, by: str) -> pl.LazyFrame:
    """The latest row of `right` with the same `by` and `on` strictly before created_at.

    Both sides are sorted by time by the caller, so Polars need not check (it cannot, by key).
    """
    return frame.join_asof(
        right,
        left_on="created_at",
        right_on=on,
        by=by,
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,
    )


def _events(account_events: pl.DataFrame, kind: str, vpa: str, name: str) -> pl.LazyFrame:
    """Times of `kind` events, by VPA as `vpa`, sorted, as `name`."""
    return (
        account_events.lazy()
        .filter(pl.col("event_type") == kind)
        .select(pl.col("vpa").alias(vpa), _utc("event_time").alias(name))
        .drop_nulls(name)
        .sort(name)
    )


def compute_features_polars(
    transfers: pl.DataFrame, account_events: pl.DataFrame, labels: pl.DataFrame
) -> pl.DataFrame:
    """Every feature by the Polars formulation, as compute_features returns it (any row order)."""
    t = _transfers(transfers)
    span = transfers.select(pl.col("created_at").max() - pl.col("created_at").min()).item()
    ever = (span or timedelta(0)) + timedelta(microseconds=1)  # a window as long as the ledger
    frame = t.with_columns(
        *_transfer_features(), *_payer_features(), *_payee_features(), *_pair_features(ever)
    )
    distinct = [_distinct(t, PAYER, PAYEE, "24h", "payer_distinct_payees_24h")] + [
        _distinct(t, PAYEE, PAYER, w, f"payee_distinct_payers_{w}") for w in DISTINCT_WINDOWS
    ]
    for key, counts in zip([PAYER, PAYEE, PAYEE, PAYEE], distinct, strict=True):
        frame = frame.join(counts, on=[key, "created_at"], how="left")
    frauds = _frauds(t, labels)
    for entity in LABEL_KEYS:
        frame = frame.join(_label_recency(t, frauds, entity, ever), on="transfer_id", how="left")
    frame = (
        frame.join(_passed_on(t), on="transfer_id", how="left")
        .join(_first_seen(t), on=PAYEE, how="left")
        .sort("created_at")  # for the as-of joins: the joins above keep no order
    )
    for name, kind in PAYER_EVENTS.items():
        frame = _latest_before(frame, _events(account_events, kind, PAYER, kind), kind, PAYER)
        frame = frame.with_columns(_hours_since(kind).alias(name))
    registered = _events(account_events, "REGISTERED", PAYEE, "payee_registered")
    frame = _latest_before(frame, registered, "payee_registered", PAYEE)
    frame = _latest_before(frame, _fraud_reports(frauds), "known_at", PAYEE).with_columns(
        pl.col("reports").fill_null(0),
    )
    frame = frame.with_columns(
        (pl.col("inbound_24h") / 100).alias("payee_inbound_amount_24h"),
        _share(pl.col("sent_24h"), pl.col("inbound_24h")).alias("payee_passthrough_24h"),
        pl.coalesce(
            _hours_since("payee_registered"),
            pl.when(pl.col("first_seen") < pl.col("created_at")).then(_hours_since("first_seen")),
        ).alias("payee_account_age_hours"),
        pl.col("reports").alias("payee_fraud_reports"),
        (pl.col("reports") / (pl.col("payee_prior") + FRAUD_RATE_PRIOR)).alias(
            "payee_fraud_rate_reported"
        ),
    )
    features = frame.select("transfer_id", *(pl.col(n).cast(pl.Float64) for n in FEATURE_NAMES))
    return features.collect()
