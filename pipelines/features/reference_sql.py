"""The same features in plain DuckDB SQL: RANGE window frames and as-of joins.

A second, independent formulation of every feature of `definitions.py`, read straight off the
definitions: window frames `RANGE BETWEEN INTERVAL w PRECEDING AND INTERVAL 1 MICROSECOND
PRECEDING`, i.e. [t - w, t) with ties and the row itself left out, partitioned by payer, payee,
pair and device; ASOF joins (`created_at > event_time`) for account events and the payee's
fraud reports ever. The recent-report features run the same frames over one time line per
entity (payer, payee, device): its transfers, plus for each fraud-labelled transfer of it a row
at its known_at (a report) and +1 / -1 marks that count it in the fraud rate of the windows it
was made in from that moment on. It is the benchmark's baseline and the tests check that it
agrees with the engine. It is much slower than `engine.compute_features` on millions of rows:
use the engine.
"""

from __future__ import annotations

import duckdb
import polars as pl

from pipelines.features.definitions import FEATURE_NAMES
from pipelines.india_time import IST_OFFSET_US

_BEFORE = "INTERVAL 1 MICROSECOND PRECEDING"  # strictly before t: no ties, not the row itself


def _frame(partition: str, start: str, end: str = _BEFORE) -> str:
    return f"(PARTITION BY {partition} ORDER BY created_at RANGE BETWEEN {start} AND {end})"


def _windows(prefix: str, partition: str, spans: dict[str, str]) -> str:
    return ",\n        ".join(
        f"{prefix}{name} AS {_frame(partition, f'INTERVAL {span} PRECEDING')}"
        for name, span in spans.items()
    )


_PAYER_SPANS = {
    "5m": "5 MINUTES",
    "1h": "1 HOUR",
    "24h": "24 HOURS",
    "7d": "7 DAYS",
    "30d": "30 DAYS",
}
_PAYEE_SPANS = {"1h": "1 HOUR", "24h": "24 HOURS", "7d": "7 DAYS"}
_LABEL_SPANS = {"1d": "24 HOURS", "7d": "168 HOURS", "30d": "720 HOURS"}  # a day is 24 hours
_LABEL_KEYS = {"payer": "payer_vpa", "payee": "payee_vpa", "device": "payer_device_id"}

_PAYER_AGGS = ",\n        ".join(
    f"count(*) OVER p{w} AS payer_count_{w}, "
    f"coalesce(sum(amount_paise) OVER p{w}, 0) / 100.0 AS payer_amount_{w}"
    for w in _PAYER_SPANS
)
_PAYEE_AGGS = ",\n        ".join(
    f"count(DISTINCT payer_vpa) OVER e{w} AS payee_distinct_payers_{w}" for w in _PAYEE_SPANS
)
_PAYER_WINDOWS = _windows("p", "payer_vpa", _PAYER_SPANS)
_PAYEE_WINDOWS = _windows("e", "payee_vpa", _PAYEE_SPANS)
_LABEL_WINDOWS = _windows("r", "entity, key", _LABEL_SPANS)
_LABEL_EVER = _frame("entity, key", "UNBOUNDED PRECEDING")
# The 7 days before the last 24 hours: [t - 8d, t - 24h).
_WEEK_BEFORE = _frame(
    "payee_vpa", "INTERVAL 8 DAYS PRECEDING", "INTERVAL '24 hours 1 microsecond' PRECEDING"
)
_PAYEE_EVER = _frame("payee_vpa", "UNBOUNDED PRECEDING")
_PAYEE_MONTH = _frame("payee_vpa", "INTERVAL 30 DAYS PRECEDING")
_PAIR_EVER = _frame("payer_vpa, payee_vpa", "UNBOUNDED PRECEDING")
_SENT_24H = _frame("vpa", "INTERVAL 24 HOURS PRECEDING")
_COUNTS_OUT = ", ".join(f"payer.payer_count_{w}::DOUBLE AS payer_count_{w}" for w in _PAYER_SPANS)
_AMOUNTS_OUT = ", ".join(f"payer.payer_amount_{w} AS payer_amount_{w}" for w in _PAYER_SPANS)
_DISTINCT_OUT = ", ".join(
    f"payee.payee_distinct_payers_{w}::DOUBLE AS payee_distinct_payers_{w}" for w in _PAYEE_SPANS
)

_ENTITY_ROWS = "\n          UNION ALL\n          ".join(
    f"SELECT '{entity}' AS entity, {key} AS key, transfer_id, created_at FROM t"
    for entity, key in _LABEL_KEYS.items()
)
_ENTITY_FRAUDS = "\n    UNION ALL\n    ".join(
    f"SELECT '{entity}' AS entity, {key} AS key, created_at, known_at FROM fraud"
    for entity, key in _LABEL_KEYS.items()
)
_NO_MARKS = ",\n           ".join(f"0 AS enter_{w}" for w in _LABEL_SPANS)
_ENTER = ",\n           ".join(
    f"(known_at < created_at + INTERVAL {span})::INTEGER" for span in _LABEL_SPANS.values()
)
_LEAVE = "\n    UNION ALL\n    ".join(
    "SELECT entity, key, created_at + INTERVAL {span}, NULL, NULL, {marks}\n    "
    "FROM entity_frauds WHERE known_at < created_at + INTERVAL {span}".format(
        span=span, marks=", ".join("-1" if v == w else "0" for v in _LABEL_SPANS)
    )
    for w, span in _LABEL_SPANS.items()
)
_LABEL_AGGS = ",\n        ".join(
    f"count(known_at) OVER r{w} AS reports_{w},\n        "
    f"count(transfer_id) OVER r{w} AS made_{w},\n        "
    f"sum(enter_{w}) OVER ever AS known_made_{w}"
    for w in _LABEL_SPANS
)
_LABELS_OUT = ",\n    ".join(
    f"{e}_labels.reports_{w}::DOUBLE AS {e}_fraud_reports_{w}, "
    f"{e}_labels.known_made_{w} / NULLIF({e}_labels.made_{w}, 0) AS {e}_fraud_rate_{w}"
    for e in _LABEL_KEYS
    for w in _LABEL_SPANS
)
_DAYS_SINCE_OUT = ",\n    ".join(
    f"(epoch_us(t.created_at) - epoch_us({e}_labels.last_known)) / 8.64e10 "
    f"AS {e}_days_since_fraud_report"
    for e in _LABEL_KEYS
)
# LEFT joins, though every transfer has its row under each entity: inner joins filtered by
# entity made DuckDB estimate so few rows that it planned the ASOF joins as nested loops.
_LABELS_JOIN = "\n".join(
    f"LEFT JOIN label_windows {e}_labels "
    f"ON {e}_labels.transfer_id = t.transfer_id AND {e}_labels.entity = '{e}'"
    for e in _LABEL_KEYS
)

FEATURES_SQL = f"""
WITH t AS (
    SELECT transfer_id, created_at, payer_vpa, payee_vpa, payee_type, amount_paise, channel,
           payer_device_id, status, response_code,
           status IN ('SUCCESS', 'REVERSED') AS ok,
           status = 'FAILED' AS failed,
           CAST(((epoch_us(created_at) + {IST_OFFSET_US}) // 3600000000) % 24 AS INTEGER)
               AS hour_ist
    FROM {{transfers}}
),
marked AS (
    SELECT *,
           created_at = min(created_at) OVER (PARTITION BY payer_vpa, payee_vpa) AS first_to_payee,
           created_at = min(created_at) OVER (PARTITION BY payer_vpa, payer_device_id)
               AS new_device
    FROM t
),
payer AS (
    SELECT transfer_id, new_device,
        {_PAYER_AGGS},
        median(amount_paise) FILTER (WHERE ok) OVER p30d AS ok_median_30d,
        avg(amount_paise) FILTER (WHERE ok) OVER p30d AS ok_mean_30d,
        stddev_samp(amount_paise) FILTER (WHERE ok) OVER p30d AS ok_std_30d,
        count(DISTINCT payee_vpa) OVER p24h AS payer_distinct_payees_24h,
        count(*) FILTER (WHERE first_to_payee) OVER p24h AS new_payees_24h,
        count(*) FILTER (WHERE hour_ist < 5) OVER p30d AS night_30d,
        count(*) FILTER (WHERE failed AND response_code IN ('ZM', 'Z6')) OVER p24h
            AS payer_failed_pin_24h,
        count(*) FILTER (WHERE failed AND response_code = 'Z9') OVER p24h
            AS payer_failed_funds_24h
    FROM marked
    WINDOW {_PAYER_WINDOWS}
),
payee AS (
    SELECT transfer_id,
        {_PAYEE_AGGS},
        coalesce(sum(amount_paise) FILTER (WHERE ok) OVER e24h, 0) AS inbound_24h,
        count(*) OVER e24h AS payee_count_24h,
        count(*) OVER week_before AS payee_count_week_before,
        count(*) FILTER (WHERE failed) OVER e7d AS payee_failed_7d,
        count(*) OVER e7d AS payee_count_7d,
        count(*) FILTER (WHERE first_to_payee) OVER e7d AS new_payers_7d,
        avg(amount_paise) FILTER (WHERE ok) OVER e30d AS ok_mean_30d,
        count(*) OVER ever AS payee_prior
    FROM marked
    WINDOW {_PAYEE_WINDOWS},
        week_before AS {_WEEK_BEFORE},
        e30d AS {_PAYEE_MONTH},
        ever AS {_PAYEE_EVER}
),
pair AS (
    SELECT transfer_id,
        count(*) OVER ever AS pair_prior_count,
        avg(amount_paise) OVER ever AS pair_mean,
        max(created_at) OVER ever AS pair_last
    FROM t
    WINDOW ever AS {_PAIR_EVER}
),
flows AS (  -- money each VPA sent, plus one silent row per transfer to ask at the payee
    SELECT payer_vpa AS vpa, created_at, CASE WHEN ok THEN amount_paise ELSE 0 END AS sent,
           NULL::VARCHAR AS transfer_id
    FROM t
    UNION ALL
    SELECT payee_vpa, created_at, 0, transfer_id FROM t
),
passthrough AS (
    SELECT transfer_id,
        sum(sent) OVER {_SENT_24H} AS sent_24h
    FROM flows
    QUALIFY transfer_id IS NOT NULL
),
first_seen AS (
    SELECT vpa, min(created_at) AS first_at
    FROM (SELECT payer_vpa AS vpa, created_at FROM t UNION ALL SELECT payee_vpa, created_at FROM t)
    GROUP BY vpa
),
fraud AS (  -- each reported transfer, its fraud known from its first report (not before it)
    SELECT t.payer_vpa, t.payee_vpa, t.payer_device_id, t.created_at,
           greatest(t.created_at, min(l.reported_at)) AS known_at
    FROM t JOIN {{labels}} l USING (transfer_id)
    WHERE l.label = 'FRAUD'
    GROUP BY t.transfer_id, t.payer_vpa, t.payee_vpa, t.payer_device_id, t.created_at
),
fraud_running AS (
    SELECT payee_vpa, known_at,
        count(*) OVER (PARTITION BY payee_vpa ORDER BY known_at
                       RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS reports
    FROM fraud
),
entity_frauds AS (  -- each fraud under its payer, its payee and its device
    {_ENTITY_FRAUDS}
),
label_timeline AS (
    -- Per entity key: each transfer, asking at its created_at (no marks); each fraud made at c
    -- and known at k, a report at k. It counts in the w-rate of the transfers at t whose
    -- window [t - w, t) holds c and that come after k, those with k < t <= c + w: marks
    -- enter_w, +1 at k and -1 at c + w (none if k >= c + w), summed strictly before t.
    SELECT entity, key, created_at, transfer_id, NULL AS known_at,
           {_NO_MARKS}
    FROM ({_ENTITY_ROWS})
    UNION ALL
    SELECT entity, key, known_at, NULL, known_at,
           {_ENTER}
    FROM entity_frauds
    UNION ALL
    {_LEAVE}
),
label_windows AS (  -- per transfer and entity: reports, made and made-and-known, last report
    SELECT entity, transfer_id,
        {_LABEL_AGGS},
        max(known_at) OVER ever AS last_known
    FROM label_timeline
    WINDOW {_LABEL_WINDOWS},
        ever AS {_LABEL_EVER}
    QUALIFY transfer_id IS NOT NULL
),
registered AS (SELECT vpa, event_time FROM {{events}} WHERE event_type = 'REGISTERED'),
bound AS (SELECT vpa, event_time FROM {{events}} WHERE event_type = 'DEVICE_BOUND'),
sim AS (SELECT vpa, event_time FROM {{events}} WHERE event_type = 'SIM_CHANGED'),
pin AS (SELECT vpa, event_time FROM {{events}} WHERE event_type = 'PIN_RESET')
SELECT
    t.transfer_id,
    ln(1 + t.amount_paise / 100.0) AS amount_log,
    (t.payee_type = 'MERCHANT')::DOUBLE AS payee_is_merchant,
    (t.channel = 'CHAT')::DOUBLE AS channel_chat,
    (t.channel = 'QR')::DOUBLE AS channel_qr,
    (t.channel = 'INTENT')::DOUBLE AS channel_intent,
    (t.channel = 'COLLECT')::DOUBLE AS channel_collect,
    t.hour_ist::DOUBLE AS hour_ist,
    (t.hour_ist < 5)::DOUBLE AS is_night_ist,
    {_COUNTS_OUT},
    {_AMOUNTS_OUT},
    t.amount_paise / payer.ok_median_30d AS payer_amount_ratio_median_30d,
    (t.amount_paise - payer.ok_mean_30d) / NULLIF(payer.ok_std_30d, 0)
        AS payer_amount_zscore_30d,
    (epoch_us(t.created_at) - epoch_us(reg_payer.event_time)) / 3.6e9
        AS payer_hours_since_registration,
    (epoch_us(t.created_at) - epoch_us(bound.event_time)) / 3.6e9
        AS payer_hours_since_device_bound,
    (epoch_us(t.created_at) - epoch_us(sim.event_time)) / 3.6e9 AS payer_hours_since_sim_change,
    (epoch_us(t.created_at) - epoch_us(pin.event_time)) / 3.6e9 AS payer_hours_since_pin_reset,
    payer.new_device::DOUBLE AS payer_new_device,
    payer.payer_distinct_payees_24h::DOUBLE AS payer_distinct_payees_24h,
    payer.new_payees_24h / NULLIF(payer.payer_count_24h, 0) AS payer_new_payee_share_24h,
    payer.night_30d / NULLIF(payer.payer_count_30d, 0) AS payer_night_share_30d,
    payer.payer_failed_pin_24h::DOUBLE AS payer_failed_pin_24h,
    payer.payer_failed_funds_24h::DOUBLE AS payer_failed_funds_24h,
    {_DISTINCT_OUT},
    payee.inbound_24h / 100.0 AS payee_inbound_amount_24h,
    passthrough.sent_24h / NULLIF(payee.inbound_24h, 0) AS payee_passthrough_24h,
    coalesce(
        (epoch_us(t.created_at) - epoch_us(reg_payee.event_time)) / 3.6e9,
        CASE WHEN first_seen.first_at < t.created_at
             THEN (epoch_us(t.created_at) - epoch_us(first_seen.first_at)) / 3.6e9 END
    ) AS payee_account_age_hours,
    payee.payee_count_24h / (payee.payee_count_week_before / 7.0 + 1) AS payee_volume_spike,
    coalesce(fraud_running.reports, 0) / (payee.payee_prior + 10.0) AS payee_fraud_rate_reported,
    coalesce(fraud_running.reports, 0)::DOUBLE AS payee_fraud_reports,
    payee.payee_failed_7d / NULLIF(payee.payee_count_7d, 0) AS payee_decline_rate_7d,
    payee.new_payers_7d / NULLIF(payee.payee_count_7d, 0) AS payee_new_payer_share_7d,
    t.amount_paise / payee.ok_mean_30d AS payee_amount_ratio_mean_30d,
    {_LABELS_OUT},
    {_DAYS_SINCE_OUT},
    pair.pair_prior_count::DOUBLE AS pair_prior_count,
    (pair.pair_prior_count = 0)::DOUBLE AS pair_is_first,
    t.amount_paise / pair.pair_mean AS pair_amount_ratio_mean,
    (epoch_us(t.created_at) - epoch_us(pair.pair_last)) / 8.64e10 AS pair_days_since_last
FROM t
JOIN payer USING (transfer_id)
JOIN payee USING (transfer_id)
JOIN pair USING (transfer_id)
JOIN passthrough USING (transfer_id)
{_LABELS_JOIN}
LEFT JOIN first_seen ON first_seen.vpa = t.payee_vpa
ASOF LEFT JOIN registered reg_payer
    ON reg_payer.vpa = t.payer_vpa AND t.created_at > reg_payer.event_time
ASOF LEFT JOIN bound ON bound.vpa = t.payer_vpa AND t.created_at > bound.event_time
ASOF LEFT JOIN sim ON sim.vpa = t.payer_vpa AND t.created_at > sim.event_time
ASOF LEFT JOIN pin ON pin.vpa = t.payer_vpa AND t.created_at > pin.event_time
ASOF LEFT JOIN registered reg_payee
    ON reg_payee.vpa = t.payee_vpa AND t.created_at > reg_payee.event_time
ASOF LEFT JOIN fraud_running
    ON fraud_running.payee_vpa = t.payee_vpa AND t.created_at > fraud_running.known_at
"""


def features_sql(
    transfers: str = "ledger.transfers",
    account_events: str = "ledger.account_events",
    labels: str = "ledger.labels",
) -> str:
    """The query over the named tables (or views): transfer_id plus every feature."""
    return FEATURES_SQL.format(transfers=transfers, events=account_events, labels=labels)


def compute_features_sql(
    con: duckdb.DuckDBPyConnection,
    transfers: str = "ledger.transfers",
    account_events: str = "ledger.account_events",
    labels: str = "ledger.labels",
) -> pl.DataFrame:
    """Every feature by the SQL formulation, as compute_features returns it (any row order)."""
    frame = con.sql(features_sql(transfers, account_events, labels)).pl()
    return frame.select("transfer_id", *(pl.col(n).cast(pl.Float64) for n in FEATURE_NAMES))
