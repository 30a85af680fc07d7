"""Request validation: synchronous checks of a create body, and the deferred `params` checks.

Messages mimic the real API's pydantic-style wording (spec §4).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

from pydantic_core import from_json

from batchbus.emulator.config import OUTPUT_300K_BETA, EmulatedModel
from batchbus.emulator.errors import ApiError, invalid_request, not_found
from batchbus.emulator.model_table import ModelIndex, output_limit, thinking_types

CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
_CUSTOM_ID_RE = re.compile(r"[a-zA-Z0-9_-]+")
_ITEM_KEYS = frozenset({"custom_id", "params"})
# Removed by API version 2026-10-21 for every model, and refused by Claude 5 models.
_SAMPLING = ("temperature", "top_p", "top_k")

Item = tuple[str, dict[str, Any]]


def parse_json(raw: bytes) -> Any:
    """pydantic's parser first (a 100,000-request body in a third of json.loads's time);
    what it refuses (deep nesting, a lone surrogate) goes to json.loads, whose error or
    value is the answer."""
    try:
        return from_json(raw)
    except ValueError:
        pass
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise invalid_request(f"The request body is not valid JSON: {exc}") from None


def parse_create_body(raw: bytes, max_requests: int) -> list[Item]:
    """Validate a create body and return its (custom_id, params) pairs; raise ApiError (400)."""
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise invalid_request("Input should be a valid dictionary")
    for key in body:
        if key != "requests":
            raise invalid_request(f"{key}: Extra inputs are not permitted")
    if "requests" not in body:
        raise invalid_request("requests: Field required")
    requests = body["requests"]
    if not isinstance(requests, list):
        raise invalid_request("requests: Input should be a valid list")
    if not requests:
        raise invalid_request("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > max_requests:
        raise invalid_request(
            f"requests: List should have at most {max_requests} items after validation, "
            f"not {len(requests)}"
        )
    items = [_item(index, item) for index, item in enumerate(requests)]
    _check_unique(items)
    return items


def _item(index: int, item: Any) -> Item:
    where = f"requests.{index}"
    if not isinstance(item, dict):
        raise invalid_request(f"{where}: Input should be a valid dictionary")
    custom_id = _custom_id(where, item)
    if "params" not in item:
        raise invalid_request(f"{where}.params: Field required")
    params = item["params"]
    if not isinstance(params, dict):
        raise invalid_request(f"{where}.params: Input should be a valid dictionary")
    for key in item:
        if key not in _ITEM_KEYS:
            raise invalid_request(f"{where}.{key}: Extra inputs are not permitted")
    return custom_id, params


def _custom_id(where: str, item: dict[str, Any]) -> str:
    if "custom_id" not in item:
        raise invalid_request(f"{where}.custom_id: Field required")
    custom_id = item["custom_id"]
    if not isinstance(custom_id, str):
        raise invalid_request(f"{where}.custom_id: Input should be a valid string")
    if not custom_id:
        raise invalid_request(f"{where}.custom_id: String should have at least 1 character")
    if len(custom_id) > 64:
        raise invalid_request(f"{where}.custom_id: String should have at most 64 characters")
    if not _CUSTOM_ID_RE.fullmatch(custom_id):
        raise invalid_request(
            f"{where}.custom_id: String should match pattern '{CUSTOM_ID_PATTERN}'"
        )
    return custom_id


def _check_unique(items: list[Item]) -> None:
    seen: set[str] = set()
    for custom_id, _ in items:
        if custom_id in seen:
            raise invalid_request(
                "requests: custom_id's must be unique within a batch. "
                f"Duplicate custom_id found: {custom_id}"
            )
        seen.add(custom_id)


def check_params(
    params: dict[str, Any],
    models: ModelIndex,
    api_version: str,
    *,
    batch: bool,
    betas: Collection[str] = (),
) -> None:
    """Validate Messages params as the API does after accepting a batch; raise ApiError."""
    for field in ("model", "max_tokens", "messages"):
        if field not in params:
            raise invalid_request(f"{field}: Field required")
    if params.get("stream") is True:
        where = "the Message Batches API" if batch else "this emulator"
        raise invalid_request(f'"stream=True" is not supported in {where}')
    if batch and "speed" in params:
        raise invalid_request("speed: fast mode is not supported in the Message Batches API")
    if api_version == "2026-10-21":
        for field in _SAMPLING:
            if field in params:
                raise invalid_request(f"{field}: Extra inputs are not permitted")
    _check_types(params)
    name = params["model"]
    model = _served_model(name, models)
    _check_max_tokens(name, params["max_tokens"], output_limit(model, betas))
    if model.claude5:
        _check_claude5(name, params)
    _check_thinking(name, params, model)


def _check_types(params: dict[str, Any]) -> None:
    if not isinstance(params["model"], str):
        raise invalid_request("model: Input should be a valid string")
    max_tokens = params["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise invalid_request("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise invalid_request("max_tokens: must be greater than or equal to 1")
    messages = params["messages"]
    if not isinstance(messages, list):
        raise invalid_request("messages: Input should be a valid list")
    if not messages:
        raise invalid_request("messages: at least one message is required")


def _served_model(name: str, models: ModelIndex) -> EmulatedModel:
    """The model a request names (id or alias); unknown and retired models are not found."""
    served = models.get(name)
    if served is None:
        raise not_found(f"model: {name}")
    model = served[1]
    if model.lifecycle == "retired":
        raise not_found(f"model: {name} was retired and no longer serves requests")
    return model


def _check_max_tokens(name: str, max_tokens: int, limit: int) -> None:
    if max_tokens > limit:
        raise invalid_request(
            f"max_tokens: {max_tokens} > {limit}, which is the maximum allowed number of "
            f"output tokens for {name}"
        )


def _check_claude5(name: str, params: dict[str, Any]) -> None:
    """Claude 5 models take no sampling parameters and no assistant prefill."""
    for field in _SAMPLING:
        if field in params:
            raise invalid_request(f"`{field}` is deprecated for {name}.")
    last = params["messages"][-1]
    if isinstance(last, dict) and last.get("role") == "assistant":
        raise invalid_request(f"Prefilling assistant messages is not supported for {name}.")


def _check_thinking(name: str, params: dict[str, Any], model: EmulatedModel) -> None:
    thinking = params.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if isinstance(kind, str) and kind not in thinking_types(model):
        raise invalid_request(
            f"thinking.type: `{kind}` is not supported for {name}; use `adaptive`."
        )


def check_message_betas(betas: Collection[str]) -> None:
    """The Messages API refuses the batch-only output-300k beta."""
    if OUTPUT_300K_BETA in betas:
        raise invalid_request(
            f"anthropic-beta: {OUTPUT_300K_BETA} is supported only by the Message Batches API"
        )


def params_problem(
    params: dict[str, Any], models: ModelIndex, api_version: str, betas: Collection[str] = ()
) -> ApiError | None:
    """The deferred validation error of one batch request, or None if it is valid."""
    try:
        check_params(params, models, api_version, batch=True, betas=betas)
    except ApiError as exc:
        return exc
    return None
