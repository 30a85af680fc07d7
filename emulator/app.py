"""Starlette routes of the emulated API (`/v1/...`): auth, faults, then the operation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from batchbus.emulator.access import api_version, check_auth, request_betas
from batchbus.emulator.admin import admin_routes
from batchbus.emulator.config import EmulatorConfig, FaultRule
from batchbus.emulator.errors import ApiError, api_error_response, error_response, error_type_for
from batchbus.emulator.faults import fault_response
from batchbus.emulator.middleware import RequestIdMiddleware
from batchbus.emulator.model_table import find_model, model_info, models_page, parse_lifecycles
from batchbus.emulator.state import EmulatorState

Handler = Callable[[Request, EmulatorState], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]

_BATCH = "/v1/messages/batches/{batch_id}"


def _is_error(rule: FaultRule) -> bool:
    """A rule without status (and not spend_limit) only delays."""
    return rule.status is not None or rule.spend_limit


def operation(name: str, handler: Handler) -> Endpoint:
    """Count the call, check access, then run the handler under any scripted fault."""

    async def endpoint(request: Request) -> Response:
        state: EmulatorState = request.app.state.emulator
        rid: str = request.state.request_id
        state.calls[name] += 1
        try:
            config = state.config
            check_auth(request.headers, config.api_keys)
            request.state.api_version = api_version(request.headers, config.api_versions)
            rule = state.faults.take(config.faults, name)
            if rule is None:
                return await handler(request, state)
            return await _with_fault(rule, handler, request, state)
        except ApiError as exc:
            return api_error_response(exc, rid)

    return endpoint


async def _with_fault(
    rule: FaultRule, handler: Handler, request: Request, state: EmulatorState
) -> Response:
    """Delay and/or fail; with `after_create` the operation takes effect first, so the
    caller loses a response for something that really happened."""
    response = await handler(request, state) if rule.after_create else None
    if rule.delay_seconds:
        await asyncio.sleep(rule.delay_seconds)
    if _is_error(rule):
        return fault_response(rule, request.state.request_id)
    return response if response is not None else await handler(request, state)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, however it arrives (Content-Length in pieces, chunked), or ApiError
    413 once it exceeds `limit`. The rest is drained, not left unread: a client still sending
    would see a reset instead of the 413 (and the SDK would retry). Bytes, not a bytearray:
    pydantic's parser copies a bytearray first, a third copy of a 256 MB body."""
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif chunks:
            chunks.clear()  # over the limit: hold nothing while draining
    if size > limit:
        raise ApiError(413, "Request exceeds the maximum size", "request_too_large")
    return b"".join(chunks)


def base_url(request: Request) -> str:
    """Our own scheme://host:port as the client reached us (results_url must point here)."""
    return str(request.base_url)


async def create_batch(request: Request, state: EmulatorState) -> Response:
    betas = request_betas(request.headers, state.config.betas)
    raw = await read_body(request, state.config.max_body_bytes)
    batch = await run_in_threadpool(state.create, raw, request.state.api_version, betas)
    return JSONResponse(state.batch_json(batch, base_url(request)))


async def retrieve_batch(request: Request, state: EmulatorState) -> Response:
    batch = state.store.get(request.path_params["batch_id"])
    return JSONResponse(state.batch_json(batch, base_url(request)))


async def list_batches(request: Request, state: EmulatorState) -> Response:
    after_id, before_id, limit = _paging(request)
    batches, has_more = state.store.page(after_id, before_id, limit)
    url = base_url(request)
    data = [state.batch_json(batch, url) for batch in batches]
    return _page(data, has_more)


def _paging(request: Request) -> tuple[str | None, str | None, int]:
    """after_id, before_id and limit of a list call (at most one cursor)."""
    query = request.query_params
    after_id, before_id = query.get("after_id"), query.get("before_id")
    if after_id is not None and before_id is not None:
        raise ApiError(400, "Only one of after_id and before_id may be given.")
    return after_id, before_id, _limit(query.get("limit"))


def _page(data: list[dict[str, Any]], has_more: bool) -> Response:
    return JSONResponse(
        {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


def _limit(text: str | None) -> int:
    if text is None:
        return 20
    if not text.lstrip("-").isdigit():
        raise ApiError(400, "limit: Input should be a valid integer")
    value = int(text)
    if not 1 <= value <= 1000:
        bound = "greater than or equal to 1" if value < 1 else "less than or equal to 1000"
        raise ApiError(400, f"limit: Input should be {bound}")
    return value


async def cancel_batch(request: Request, state: EmulatorState) -> Response:
    batch = state.cancel(request.path_params["batch_id"])
    return JSONResponse(state.batch_json(batch, base_url(request)))


async def delete_batch(request: Request, state: EmulatorState) -> Response:
    batch_id = request.path_params["batch_id"]
    state.delete(batch_id)
    return JSONResponse({"id": batch_id, "type": "message_batch_deleted"})


async def batch_results(request: Request, state: EmulatorState) -> Response:
    chunks = state.results(request.path_params["batch_id"])
    return StreamingResponse(chunks, media_type="application/x-jsonl")


async def create_message(request: Request, state: EmulatorState) -> Response:
    betas = request_betas(request.headers, state.config.betas)
    raw = await read_body(request, state.config.max_messages_body_bytes)
    return JSONResponse(state.message(raw, request.state.api_version, betas))


async def list_models(request: Request, state: EmulatorState) -> Response:
    after_id, before_id, limit = _paging(request)
    query = request.query_params
    # The SDK sends lists as `lifecycle[]=a&lifecycle[]=b`; plain `lifecycle=` works too.
    lifecycles = parse_lifecycles([*query.getlist("lifecycle[]"), *query.getlist("lifecycle")])
    models, has_more = models_page(state.config.models, lifecycles, after_id, before_id, limit)
    return _page([model_info(model_id, model) for model_id, model in models], has_more)


async def retrieve_model(request: Request, state: EmulatorState) -> Response:
    model_id, model = find_model(state.config.models, request.path_params["model_id"])
    return JSONResponse(model_info(model_id, model))


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer in the API's JSON error shape, not Starlette's text."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "Internal server error"
    message = f"{detail}: {request.method} {request.url.path}"
    return error_response(status, error_type_for(status), message, request.state.request_id)


def create_app(state: EmulatorState | EmulatorConfig | None = None) -> Starlette:
    """A fresh app; pass a state to share it with the caller (tests, the thread runner)."""
    if not isinstance(state, EmulatorState):
        state = EmulatorState(state)
    routes = [
        Route("/v1/messages/batches", operation("create", create_batch), methods=["POST"]),
        Route("/v1/messages/batches", operation("list", list_batches), methods=["GET"]),
        Route(_BATCH, operation("retrieve", retrieve_batch), methods=["GET"]),
        Route(_BATCH, operation("delete", delete_batch), methods=["DELETE"]),
        Route(f"{_BATCH}/cancel", operation("cancel", cancel_batch), methods=["POST"]),
        Route(f"{_BATCH}/results", operation("results", batch_results), methods=["GET"]),
        Route("/v1/messages", operation("messages", create_message), methods=["POST"]),
        Route("/v1/models", operation("models", list_models), methods=["GET"]),
        Route("/v1/models/{model_id}", operation("models", retrieve_model), methods=["GET"]),
        *admin_routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={404: _http_error, 405: _http_error},
    )
    app.state.emulator = state
    return app
