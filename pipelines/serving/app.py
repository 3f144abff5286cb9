"""The HTTP face of the decision service (FastAPI): routes, body limits, error shapes, metrics.

Bodies are read raw (with a size limit and a read timeout) and parsed by pydantic's JSON parser,
so every malformed request is a 422 listing `[{field, message}]`. A failure the service did not
expect is a 503 with a message, never a 500: the transfer service then applies its own rule,
as for any unavailable dependency. (Failures of the model or the feature state are not such
failures: the fallback decides, see `service.py`. A 503 means the decision could not be
recorded, and a decision that is not recorded is not given.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelines.decisions.record import DecisionRecord, validation_errors
from pipelines.serving.metrics import CONTENT_TYPE
from pipelines.serving.schemas import (
    AccountEventBatch,
    AccountEventRequest,
    Applied,
    ErrorBody,
    LabelBatch,
    LabelRequest,
    OutcomeRequest,
    TransferId,
    TransferRequest,
)
from pipelines.serving.service import ConflictError, DecisionService

log = logging.getLogger(__name__)

MAX_DECISION_BYTES = 64 * 1024  # a transfer is well under 2 KiB
MAX_BATCH_BYTES = 8 * 1024 * 1024
BODY_TIMEOUT_S = 5.0  # a client that trickles its body does not hold a worker
DECISIONS = "/v1/decisions"
OUTCOME = "/v1/transfers/{transfer_id}/outcome"
ACCOUNT_EVENTS = "/v1/account-events"
LABELS = "/v1/labels"
_TRANSFER_ID = TypeAdapter(TransferId)


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _field_errors(status: int, errors: list[dict[str, str]]) -> Response:
    return _json(status, {"detail": errors})


def _unavailable(what: str, exc: Exception) -> Response:
    log.exception("%s failed", what)
    return _json(503, {"detail": f"{what} is unavailable: {type(exc).__name__}: {exc}"})


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyError(413, f"request body is {declared} bytes: expected at most {limit}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _BodyError(413, f"request body is over {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise _BodyError(408, f"request body not received within {BODY_TIMEOUT_S} s") from None
    return b"".join(chunks)


def _endpoint(path: str) -> str:
    """The route a path belongs to, as the metrics label it (ids do not make new series)."""
    if path.startswith("/v1/transfers/"):
        return OUTCOME
    if path in {DECISIONS, ACCOUNT_EVENTS, LABELS, "/health", "/ready", "/metrics"}:
        return path
    return "other"


class _CountRequests:
    """Counts every response by endpoint and status, including the framework's own 404s."""

    def __init__(self, app: ASGIApp, service: DecisionService) -> None:
        self.app = app
        self.requests = service.metrics.requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.requests.labels(_endpoint(scope["path"]), str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


def create_app(service: DecisionService, *, manage_service: bool = True) -> FastAPI:
    """The application over `service`. With `manage_service`, the app's start and stop start
    and close the service (its writer, the registry watch)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_service:
            await run_in_threadpool(service.start)
        try:
            yield
        finally:
            if manage_service:
                await run_in_threadpool(service.close)

    app = FastAPI(
        title="upi-risk decisions",
        version="1",
        summary="Real-time ALLOW / HOLD / BLOCK decisions (decisions-v1) for UPI transfers.",
        lifespan=lifespan,
    )
    app.add_middleware(_CountRequests, service=service)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        return _unavailable("the decision service", exc)

    async def _guarded(what: str, work: Callable[[], Awaitable[Response]]) -> Response:
        try:
            return await work()
        except _BodyError as exc:
            return _field_errors(exc.status, [{"field": "(body)", "message": str(exc)}])
        except ConflictError as exc:
            return _json(409, {"detail": str(exc)})
        except Exception as exc:
            return _unavailable(what, exc)

    @app.post(
        DECISIONS,
        summary="Decide one transfer before it is submitted",
        response_model=DecisionRecord,
        responses={
            409: {"model": ErrorBody, "description": "transfer_id decided from other content"},
            413: {"model": ErrorBody, "description": "body too large"},
            422: {"model": ErrorBody, "description": "malformed transfer; names the field"},
            503: {"model": ErrorBody, "description": "the decision could not be recorded"},
        },
        openapi_extra={"requestBody": _body_schema(TransferRequest)},
    )
    async def decisions(request: Request) -> Response:
        started = time.perf_counter()

        async def work() -> Response:
            body = await _read_body(request, MAX_DECISION_BYTES)
            try:
                transfer = TransferRequest.model_validate_json(body)
            except ValidationError as exc:
                return _field_errors(422, validation_errors(exc))
            answer = await run_in_threadpool(service.decide, transfer, started)
            return _json(answer.status, answer.body)

        return await _guarded("recording the decision", work)

    @app.post(
        OUTCOME,
        summary="Record the outcome of a decided transfer",
        response_model=Applied,
        responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}},
        openapi_extra={"requestBody": _body_schema(OutcomeRequest)},
    )
    async def outcome(transfer_id: str, request: Request) -> Response:
        async def work() -> Response:
            try:
                _TRANSFER_ID.validate_python(transfer_id)
            except ValidationError as exc:
                errors = [{"field": "transfer_id", "message": e["msg"]} for e in exc.errors()]
                return _field_errors(422, errors)
            body = await _read_body(request, MAX_DECISION_BYTES)
            try:
                parsed = OutcomeRequest.model_validate_json(body)
            except ValidationError as exc:
                return _field_errors(422, validation_errors(exc))
            known = await run_in_threadpool(service.record_outcome, transfer_id, parsed)
            if not known:
                return _json(404, {"detail": f"transfer {transfer_id} is unknown to the state"})
            return _json(200, {"applied": 1, "unknown": 0})

        return await _guarded("the feature state", work)

    def _batch_route(path: str, one: type[BaseModel], many: type[BaseModel], apply) -> None:
        async def route(request: Request) -> Response:
            async def work() -> Response:
                body = await _read_body(request, MAX_BATCH_BYTES)
                try:
                    parsed = orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    return _field_errors(422, [{"field": "(record)", "message": str(exc)}])
                try:
                    if isinstance(parsed, dict) and "items" in parsed:
                        items = many.model_validate(parsed).items
                    else:
                        items = [one.model_validate(parsed)]
                except ValidationError as exc:
                    return _field_errors(422, validation_errors(exc))
                applied = await run_in_threadpool(apply, items)
                return _json(200, applied.model_dump())

            return await _guarded("the feature state", work)

        app.post(
            path,
            summary=f"Record {one.__doc__.splitlines()[0].rstrip('.').lower()}, or a batch",
            response_model=Applied,
            responses={422: {"model": ErrorBody}},
            openapi_extra={"requestBody": _body_schema(one, many)},
        )(route)

    _batch_route(
        ACCOUNT_EVENTS, AccountEventRequest, AccountEventBatch, service.record_account_events
    )
    _batch_route(LABELS, LabelRequest, LabelBatch, service.record_labels)

    @app.get("/health", summary="The process is alive")
    async def health() -> Response:
        return _json(200, {"status": "alive"})

    @app.get("/ready", summary="Model, policy and state are loaded")
    async def ready() -> Response:
        missing = await run_in_threadpool(service.missing)
        live = service.live
        body = {"model_version": live.model_version, "policy_version": live.policy.version}
        if missing:
            return _json(503, {"status": "not ready", "missing": missing, **body})
        return _json(200, {"status": "ready", **body})

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


_SCHEMAS = (
    TransferRequest,
    OutcomeRequest,
    AccountEventRequest,
    AccountEventBatch,
    LabelRequest,
    LabelBatch,
)
_REF = "#/components/schemas/{model}"


def _body_schema(*models: type[BaseModel]) -> dict[str, Any]:
    refs = [{"$ref": _REF.format(model=m.__name__)} for m in models]
    schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request bodies, which the routes read raw."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in _SCHEMAS:
            found = model.model_json_schema(ref_template=_REF)
            components.update(found.pop("$defs", {}))
            components[model.__name__] = found
        app.openapi_schema = schema
    return app.openapi_schema
