"""Pure validation of a raw task message: a Task, or a Rejection with a clear reason."""

import json
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json

from batchbus.shared import subjects
from batchbus.shared.models import Task
from batchbus.shared.payloads import MAX_PARAMS_BYTES
from batchbus.shared.text import clip

REQUIRED_PARAMS = ("model", "max_tokens", "messages")
TASK_FIELDS = frozenset(Task.model_fields)
# JSON nests deeper than the hops after intake carry: pydantic's parser (batcher, notifier)
# stops at 200 levels and its serializer at 255. Real request bodies nest far less.
MAX_DEPTH = 100
_FALLBACK = ThreadPoolExecutor(1, thread_name_prefix="intake-json")  # see _parse
# A `\ud800`-style escape without its pair parses, but no UTF-8 encoder can write it again.
LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class Limits:
    allowed_models: frozenset[str] | None  # None: any model (the catalog's checks still apply)
    max_tokens: int | None  # a deployment's own cap; None: each model's limit only
    max_task_bytes: int
    webhooks: Mapping[str, frozenset[str]] = field(default_factory=dict)  # tenant -> names
    # Params stored in the tenant's payload bucket (`params_object`): the Messages API's
    # request size limit, since each goes as one request.
    max_params_bytes: int = MAX_PARAMS_BYTES


@dataclass(frozen=True)
class Rejection:
    reason: str  # a short code, used as a metric label
    message: str  # what the user reads
    task_id: str | None = None
    webhook: str | None = None  # the endpoint the task named: its rejection goes there too


def validate_task(data: bytes, limits: Limits) -> Task | Rejection:
    parsed = _parse(data)
    if isinstance(parsed, Rejection):
        return parsed
    raw, plain = parsed
    if not isinstance(raw, dict):
        return Rejection("not_an_object", f"task must be a JSON object, got {_kind(raw)}")
    task_id = raw.get("task_id")
    if not isinstance(task_id, str) or not subjects.is_token(task_id):
        return Rejection("bad_task_id", "task_id is missing or does not match "
                         f"{subjects.TOKEN_PATTERN}: {short(task_id)}")
    rejection = (_check_shape(raw, len(data), limits)
                 or (_check_values(raw) if not plain or _may_nest_too_deep(data) else None)
                 # stored params are checked once read (validate_params)
                 or (None if "params_object" in raw and "params" not in raw
                     else _check_params(raw.get("params"), limits)))
    webhook = raw.get("webhook") if isinstance(raw.get("webhook"), str) else None
    if rejection is not None:
        return Rejection(rejection.reason, rejection.message, task_id, webhook)
    try:
        task = Task.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return Rejection("bad_field", f"{where}: {first['msg']}", task_id, webhook)
    fallback = task.fallback_model
    if limits.allowed_models is not None and fallback is not None \
            and fallback not in limits.allowed_models:
        return Rejection("model_not_allowed", f"fallback_model {short(fallback)!r} is not "
                         f"allowed here; allowed: {', '.join(sorted(limits.allowed_models))}",
                         task_id, webhook)
    return task


def validate_params(data: bytes, limits: Limits) -> dict[str, Any] | Rejection:
    """Stored params (the bytes of a task's `params_object`), checked as inline params are:
    the request is sent with exactly these bytes."""
    parsed = _parse(data)
    if isinstance(parsed, Rejection):
        return Rejection("malformed_json", parsed.message.replace("task is", "stored params are"))
    params, plain = parsed
    if not isinstance(params, dict):
        return Rejection("bad_params", "stored params must be a Messages API request body (an "
                         f"object), got {_kind(params)}")
    rejection = ((_check_values(params) if not plain or _may_nest_too_deep(data) else None)
                 or _check_params(params, limits))
    return rejection or params


def _parse(data: bytes) -> tuple[Any, bool] | Rejection:
    """The JSON value and whether pydantic's parser took it, or a rejection saying why
    there is no value.

    pydantic's parser first: faster than json.loads, and it refuses lone surrogates, NaN,
    Infinity and nesting past 200, so what it takes needs no surrogate check. What it
    refuses is parsed again by json.loads, whose errors and values name the reason. It
    recurses, and how deep it gets depends on the stack it starts on: run on a thread of its
    own, the verdict on a deeply nested task is the same wherever intake is called from.
    """
    try:
        return from_json(data, allow_inf_nan=False), True
    except ValueError:
        pass
    try:
        return _FALLBACK.submit(json.loads, data, parse_constant=_not_json).result(), False
    except (ValueError, RecursionError) as exc:
        return Rejection("malformed_json", f"task is not valid JSON: {short(exc)}")


def _may_nest_too_deep(data: bytes) -> bool:
    """False when the text has too few brackets to nest past MAX_DEPTH (brackets inside
    strings count too, which only errs towards checking)."""
    return data.count(b"[") + data.count(b"{") > MAX_DEPTH


def check_webhook(task: Task, tenant: str, limits: Limits) -> Rejection | None:
    """A task may name only an endpoint configured for its tenant (never a URL)."""
    if task.webhook is None or task.webhook in limits.webhooks.get(tenant, ()):
        return None
    known = sorted(limits.webhooks.get(tenant, ()))
    return Rejection("unknown_webhook", f"webhook {short(task.webhook)!r} is not configured "
                     f"for tenant {tenant}; configured: {', '.join(known) or 'none'}", task.task_id)


def _check_shape(raw: dict[str, Any], size: int, limits: Limits) -> Rejection | None:
    if size > limits.max_task_bytes:
        return Rejection("too_large", f"task is {size} bytes, above the limit of "
                         f"{limits.max_task_bytes} bytes")
    unknown = sorted(set(raw) - TASK_FIELDS)
    if unknown:
        return Rejection("unknown_field", f"unknown task field(s): {short(', '.join(unknown))}; "
                         f"allowed: {', '.join(sorted(TASK_FIELDS))}")
    return None


def _check_values(raw: dict[str, Any]) -> Rejection | None:
    """Rejects values JSON allows but the later hops cannot carry (without recursion: the
    nesting itself is what is checked)."""
    stack: list[tuple[Any, int]] = [(raw, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and LONE_SURROGATE.search(value):
                return Rejection("bad_unicode", "task holds a lone UTF-16 surrogate escape "
                                 "(\\ud800-\\udfff without its pair): not valid Unicode")
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                return Rejection("too_deep", f"task nests deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                stack.extend((key, depth) for key in value)
                value = value.values()
            stack.extend((item, depth + 1) for item in value)
    return None


def _check_params(params: Any, limits: Limits) -> Rejection | None:
    if not isinstance(params, dict):
        return Rejection("bad_params", "params must be a Messages API request body (an object)")
    missing = [name for name in REQUIRED_PARAMS if name not in params]
    if missing:
        return Rejection("missing_field", f"params is missing {', '.join(missing)}")
    model, max_tokens, messages = (params[name] for name in REQUIRED_PARAMS)
    if not isinstance(model, str) or not model:
        return Rejection("bad_model", "params.model must be a non-empty string")
    if limits.allowed_models is not None and model not in limits.allowed_models:
        return Rejection("model_not_allowed", f"model {short(model)!r} is not allowed here; allowed: "
                         f"{', '.join(sorted(limits.allowed_models))}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return Rejection("bad_max_tokens", "params.max_tokens must be an integer >= 1")
    if limits.max_tokens is not None and max_tokens > limits.max_tokens:
        return Rejection("max_tokens_too_large", f"params.max_tokens {short(max_tokens)} is above "
                         f"this deployment's limit of {limits.max_tokens} (INTAKE_MAX_TOKENS)")
    if not isinstance(messages, list) or not messages:
        return Rejection("bad_messages", "params.messages must be a non-empty list")
    if params.get("stream", False) is not False:
        return Rejection("stream_not_supported", "params.stream must be false or absent: "
                         "batches do not stream")
    return None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")  # json.loads takes NaN and Infinity


def short(value: Any, limit: int = 80) -> str:
    """User text echoed in a rejection: bounded, and escaped where not encodable."""
    return clip(str(value), limit).encode("utf-8", "backslashreplace").decode()
