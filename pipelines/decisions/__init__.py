"""Decisions: from scores to what the transfer service acts on.

- `record`    the decisions-v1 record (the contract) and deterministic decision ids
- `policy`    the versioned policy: hard rules and thresholds to ALLOW / HOLD / BLOCK; the
              policy in force for the live model
- `scoring`   the scoring pass: score new transfers, decide, keep the decision of record
- `outbox`    the durable outbox
- `delivery`  delivery to the transfer service (retries, idempotency keys, dead letters)
"""
