"""Point-in-time features of transfers: one engine for a batch of millions and for one transfer.

Point-in-time rule: a feature of transfer t uses only what was known strictly before
t.created_at:
- other transfers with created_at < t.created_at: transfers created at the same microsecond
  (ties) are excluded, and so is t itself;
- account events with event_time < t.created_at;
- labels with reported_at < t.created_at, and only about transfers that are themselves prior.

A prior transfer's outcome is its final status, SUCCESS or FAILED, because the switch settles a
transfer within seconds of creating it. REVERSED arrives hours later, so for features a REVERSED
transfer counts as the SUCCESS it was when it settled: the reversal is never used. A transfer
still PENDING in the ledger counts as attempted but neither succeeded nor failed.

Choices the catalogue (`definitions.py`) states in one line each:
- "attempted" counts and amounts include every status; "successful" means SUCCESS or REVERSED;
- a window "24h" is [t - 24h, t); lifetime features use every prior transfer in the input;
- `payer_new_device` looks at the payer's prior transfers only: a DEVICE_BOUND event does not
  make a device "seen", because a takeover binds the new device just before paying;
- `payer_hours_since_*` and `payee_account_age_hours` use the latest matching event before t;
- a transfer counts in `payee_fraud_reports` once its first FRAUD label is reported; LEGIT
  labels are not used; the recent-report features (`<payer|payee|device>_fraud_reports_<w>`,
  `..._fraud_rate_<w>`, `..._days_since_fraud_report`) date a fraud by that first report;
- `payer_amount_zscore_30d` uses the sample standard deviation.

How it is fast: every key (payer, payee, pair, device) is one sort of the rows by (key, created_at), and
a row's prior window is a slice of its key's run; counts are index differences and sums are
differences of prefix sums. Everything is numpy over whole columns. The modules, in the order
a batch goes through them:
- `inputs`: the warehouse's frames, checked, as numpy columns in created_at order;
- `sorted_keys`: the sort by (key, created_at) and lookups in it; `windows`: window starts,
  sums and medians over them; `events`: account events merged into the sorted transfers;
- `transfer`, `payer`, `payee`, `pair`, `device`: the feature families, one module each, as
  the catalogue's groups; `labels`: the recent fraud reports of any of those keys, each
  reported fraud merged into its key's positions once;
- `batch`: `compute_features`, which runs the families on two threads for big batches;
  `output`: writing features into the output blocks (float64, and float32 for counts and
  flags); `memory`: mapping those blocks up front and giving each row back once the output
  frame holds it, and `JOB_ENVIRONMENT`, what the process computing big batches should start
  with;
  `_kernels`: numba loops that replace numpy steps in big batches;
- `single_transfer`: `features_for_transfer`, the online path, by the same batch code.
Online, `pipelines.features.online` keeps an incremental state that gives the same features.
"""

from pipelines.features.engine.batch import compute_features
from pipelines.features.engine.inputs import (
    ACCOUNT_EVENT_COLUMNS,
    DAY,
    HOUR,
    LABEL_COLUMNS,
    LONGEST_WINDOW,
    MINUTE,
    SECOND,
    TRANSFER_COLUMNS,
    load_inputs,
)
from pipelines.features.engine.memory import JOB_ENVIRONMENT
from pipelines.features.engine.payee import FRAUD_RATE_PRIOR
from pipelines.features.engine.single_transfer import features_for_transfer

__all__ = [
    "ACCOUNT_EVENT_COLUMNS",
    "DAY",
    "FRAUD_RATE_PRIOR",
    "HOUR",
    "JOB_ENVIRONMENT",
    "LABEL_COLUMNS",
    "LONGEST_WINDOW",
    "MINUTE",
    "SECOND",
    "TRANSFER_COLUMNS",
    "compute_features",
    "features_for_transfer",
    "load_inputs",
]
