"""The real-time decision service (`upi-risk serve`): a decision before the money moves.

The transfer service asks `POST /v1/decisions` before it submits a payment and gets the
decisions-v1 record back in milliseconds. The path of one request (`service.py`):

    validate (schemas.py, the ledger contract's patterns)      -> 422 naming the field
    decided before? (online log, by transfer_id)               -> same answer, or 409
    features (online feature state) + score (live model)       on a pool of their own, waited
                                                               for until the deadline
    decide_one (the batch policy: hard rules, thresholds,      a failed or late stage: hard
                reason codes)                                  rules, then the fallback
    record (operational DB, group commit, fsynced)             before the answer leaves
    record_transfer (state)                                    so the next transfer counts it

Design points:
- One decision path: the policy, reason codes, features and model are the batch's own
  (`decisions.policy.decide_one`, the feature catalogue through `features.online`, the
  registry's model); nothing here restates a rule.
- The model, its policy and the allow list are one immutable value swapped whole when the
  registry's LIVE pointer moves; a request reads it once.
- Durability: a decision is committed to `online_decisions` before its response is sent;
  the state is restored at start from its snapshot and log, then reconciled with that table,
  so a `kill -9` loses neither a decision given nor a transfer the features should count.
- Later facts (outcomes, account events, labels) reach the state through their endpoints.
- app.py is the HTTP layer (FastAPI on uvicorn); runtime.py opens the state and runs it;
  metrics.py holds the Prometheus metrics in a registry of the service's own.
"""
