"""The decision service fuzzed against its own OpenAPI schema with schemathesis: every
operation, over a real HTTP server on loopback, with requests that fit the schema, requests
that break it, and requests that also keep the contract's rules the schema cannot state. No
request may get a 5xx or go unanswered, and a 422 names the fields it refuses.

The schema is the one the running server serves (`/openapi.json`), so a route or request
model that changes is fuzzed as served, without editing this file.

schemathesis's own pytest loader for a schema from a fixture (`schemathesis.pytest.
from_fixture`) breaks on pytest 9.2 (it reads `Function._nodeid`, which pytest removed), so
each operation's cases come from `APIOperation.as_strategy` under a plain `hypothesis.given`.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from pipelines.ledger import contract as c
from pipelines.risk.registry import ModelRegistry
from tests.test_serving import instance, iso, register, serving, trained_model, transfer_body

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serving_fuzz")]

DECISIONS = "/v1/decisions"
OUTCOME = "/v1/transfers/{transfer_id}/outcome"
ACCOUNT_EVENTS = "/v1/account-events"
LABELS = "/v1/labels"
WITH_BODY = [("POST", DECISIONS), ("POST", OUTCOME), ("POST", ACCOUNT_EVENTS), ("POST", LABELS)]
# No parameters and no body: one request each, and schemathesis has no negative case for them.
WITHOUT_INPUT = [("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics")]

# "positive" and "negative" are schemathesis's generation modes. "within-contract" is positive
# cases moved inside the rules the schema cannot state (`within_contract`): most positive
# cases break one, so without them few requests would reach the model, the state and the record.
STREAMS = ("positive", "negative", "within-contract")
MAX_EXAMPLES = 100  # per operation and stream: about a minute in all on two cores
# Far above any answer of this service (a decision takes milliseconds): a request unanswered
# by then is a hang, and fails naming the request. (Hypothesis's own deadline stays off: it
# would re-run a slow example and fail on the timing of a busy machine, not on the service.)
REQUEST_TIMEOUT_S = 5.0
# Decided before the fuzz, so that outcomes can be about a transfer the state knows.
DECIDED_BODIES = [transfer_body(i) for i in range(1, 4)]
DECIDED = [body["transfer_id"] for body in DECIDED_BODIES]


class RequestHung(BaseException):
    """A request the service did not answer in time. Not an `Exception`, so that Hypothesis
    stops at the first one instead of shrinking it: every shrink step would be another
    request left hanging for REQUEST_TIMEOUT_S, for minutes."""

    def __init__(self, case: schemathesis.Case) -> None:
        super().__init__(f"no answer within {REQUEST_TIMEOUT_S} s to\n    {case.as_curl_command()}")


@pytest.fixture(scope="module")
def served_schema(tmp_path_factory) -> Iterator[schemathesis.BaseSchema]:
    """The schema the service serves, the service running with a live model and the transfers
    in DECIDED already decided."""
    settings = instance(tmp_path_factory.mktemp("fuzz") / "instance")
    register(ModelRegistry(settings.paths.models), trained_model(0))
    with serving(settings) as (url, _runtime):
        with httpx.Client(base_url=url) as client:
            for body in DECIDED_BODIES:
                client.post(DECISIONS, json=body).raise_for_status()
        yield schemathesis.openapi.from_url(f"{url}/openapi.json", timeout=REQUEST_TIMEOUT_S)


def within_contract(body: Any) -> Any:
    """A generated request body moved inside the contract's rules that its schema does not
    state: plausible times (not before UPI, not in the future), integers without a fraction
    (JSON Schema takes 5.0 as an integer, the service does not), a PERSON payee's MCC and
    channel. Whatever else the body holds is kept as generated."""
    if not isinstance(body, dict):
        return body
    if isinstance(body.get("items"), list):
        return {**body, "items": [within_contract(item) for item in body["items"]]}
    recently = iso(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    out = dict(body)
    for name in ("created_at", "event_time", "reported_at"):
        if out.get(name) is not None:
            out[name] = recently
    for name in ("amount_paise", "ledger_seq"):
        if isinstance(out.get(name), float) and out[name].is_integer():
            out[name] = int(out[name])
    if out.get("payee_type") == "PERSON":
        out["mcc"] = c.PERSON_MCC
        if out.get("channel") == "COLLECT":
            out["channel"] = "CHAT"
    return out


def field_errors(response: Any) -> list[str]:
    """The fields a 422 names; fails unless the body is `{"detail": [{field, message}, ...]}`
    with every field and message given."""
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, response.text
    for error in detail:
        assert isinstance(error.get("field"), str) and error["field"], response.text
        assert isinstance(error.get("message"), str) and error["message"], response.text
    return [error["field"] for error in detail]


def test_every_operation_served_is_fuzzed(served_schema):
    served = {(op.ok().method.upper(), op.ok().path) for op in served_schema.get_all_operations()}
    assert served == set(WITH_BODY + WITHOUT_INPUT)


FUZZED = [(m, p, s) for m, p in WITH_BODY for s in STREAMS] + [
    (m, p, "positive") for m, p in WITHOUT_INPUT
]


@pytest.mark.parametrize(("method", "path", "stream"), FUZZED, ids=[" ".join(f) for f in FUZZED])
def test_no_request_gets_a_server_error_or_no_answer(served_schema, method, path, stream):
    operation = served_schema[path][method]
    mode = GenerationMode.NEGATIVE if stream == "negative" else GenerationMode.POSITIVE
    cases = operation.as_strategy(generation_mode=mode)
    if path == OUTCOME:
        # A generated id is almost never a decided transfer: half the outcomes are for one.
        cases = st.one_of(
            cases,
            st.sampled_from(DECIDED).flatmap(
                lambda tid: operation.as_strategy(
                    generation_mode=mode, path_parameters={"transfer_id": tid}
                )
            ),
        )
    statuses: collections.Counter[int] = collections.Counter()  # for the checks after the fuzz

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,  # a failure prints its request as a curl command; nothing written here
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(case=cases)
    def fuzz(case: schemathesis.Case) -> None:
        if stream == "within-contract":
            case.body = within_contract(case.body)
        try:
            response = case.call(timeout=REQUEST_TIMEOUT_S)
        except requests.Timeout as exc:
            raise RequestHung(case) from exc
        statuses[response.status_code] += 1
        case.validate_response(response, checks=[not_a_server_error])
        if response.status_code == 422:
            field_errors(response)

    fuzz()
    # The fuzz reached what it is for: malformed requests met the validation, requests
    # within the contract got past it (to a decision, the state or the record).
    if stream == "negative":
        assert statuses[422] > 0, dict(statuses)
    if stream == "within-contract" or not path.startswith("/v1/"):
        assert statuses[200] > 0, dict(statuses)


# --- requests the fuzz found that got a 5xx: each kept, so it cannot come back --------------

# Valid RFC 3339 times whose UTC time is outside Python's years 1-9999.
IN_YEAR_0 = "0001-01-01T00:00:00+00:01"
IN_YEAR_10000 = "9999-12-31T23:59:59-00:01"
FOUND = {
    "created_at out of datetime range": (
        DECISIONS,
        transfer_body(90, created_at=IN_YEAR_0),
        "created_at",
    ),
    "event_time out of datetime range": (
        ACCOUNT_EVENTS,
        {"vpa": "payer.1@waaxis", "event_type": "SIM_CHANGED", "event_time": IN_YEAR_0},
        "event_time",
    ),
    "reported_at out of datetime range": (
        LABELS,
        {
            "items": [
                {
                    "transfer_id": DECIDED[0],
                    "label": "FRAUD",
                    "source": "VICTIM_REPORT",
                    "reported_at": IN_YEAR_10000,
                }
            ]
        },
        "items.0.reported_at",
    ),
}


@pytest.mark.parametrize(("path", "body", "field"), FOUND.values(), ids=list(FOUND))
def test_requests_the_fuzz_found_are_refused_by_field(served_schema, path, body, field):
    with httpx.Client(base_url=served_schema.get_base_url(), timeout=REQUEST_TIMEOUT_S) as client:
        response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert field in field_errors(response), response.text
