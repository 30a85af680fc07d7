"""Test-control endpoints under `/_emulator/` (no auth): config, models, clock, reset, logs,
stats."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from batchbus.emulator.clock import rfc3339
from batchbus.emulator.state import EmulatorState


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


async def _json_object(request: Request) -> dict[str, Any] | None:
    body = await request.body()
    if not body:
        return {}
    try:
        value = await request.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def get_config(request: Request) -> Response:
    return JSONResponse(_state(request).config.model_dump(mode="json"))


async def put_config(request: Request) -> Response:
    patch = await _json_object(request)
    if patch is None:
        return _bad("body must be a JSON object")
    try:
        config = _state(request).configure(patch)
    except ValidationError as exc:
        return _bad(str(exc))
    return JSONResponse(config.model_dump(mode="json"))


async def put_model(request: Request) -> Response:
    """Partial `EmulatedModel` for an existing model, or a whole one for a new id."""
    patch = await _json_object(request)
    if patch is None:
        return _bad("body must be a JSON object")
    try:
        model = _state(request).set_model(request.path_params["model_id"], patch)
    except ValidationError as exc:
        return _bad(str(exc))
    return JSONResponse(model.model_dump(mode="json"))


async def delete_model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    try:
        _state(request).remove_model(model_id)
    except KeyError:
        return JSONResponse({"error": f"no model {model_id}"}, status_code=404)
    return JSONResponse({"deleted": model_id})


async def advance(request: Request) -> Response:
    body = await _json_object(request)
    seconds = (body or {}).get("seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        return _bad('body must be {"seconds": <non-negative number>}')
    return JSONResponse({"now": rfc3339(_state(request).advance(float(seconds)))})


async def reset(request: Request) -> Response:
    _state(request).reset()
    return JSONResponse({"reset": True})


async def creates(request: Request) -> Response:
    return JSONResponse({"creates": _state(request).creates()})


async def messages(request: Request) -> Response:
    return JSONResponse({"messages": _state(request).messages()})


async def stats(request: Request) -> Response:
    return JSONResponse(_state(request).stats())


def admin_routes() -> list[BaseRoute]:
    return [
        Route("/_emulator/config", get_config, methods=["GET"]),
        Route("/_emulator/config", put_config, methods=["PUT"]),
        Route("/_emulator/models/{model_id}", put_model, methods=["PUT"]),
        Route("/_emulator/models/{model_id}", delete_model, methods=["DELETE"]),
        Route("/_emulator/advance", advance, methods=["POST"]),
        Route("/_emulator/reset", reset, methods=["POST"]),
        Route("/_emulator/creates", creates, methods=["GET"]),
        Route("/_emulator/messages", messages, methods=["GET"]),
        Route("/_emulator/stats", stats, methods=["GET"]),
    ]
