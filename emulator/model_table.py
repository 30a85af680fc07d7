"""The emulated API's models: id/alias lookup, output limits, thinking types, and the
`ModelInfo` objects and pages of the Models API (`GET /v1/models[/{id}]`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from batchbus.emulator.config import (
    OUTPUT_300K_BETA,
    OUTPUT_300K_MAX_TOKENS,
    EmulatedModel,
    Lifecycle,
)
from batchbus.emulator.errors import invalid_request, not_found

Served = tuple[str, EmulatedModel]  # (model id, its record)
ModelIndex = Mapping[str, Served]  # model id or alias -> the model

THINKING_TYPES = ("adaptive", "between_tools", "disabled", "enabled")
# Claude 5 models think adaptively or not at all: no manual budget, no between_tools.
CLAUDE5_THINKING = frozenset({"adaptive", "disabled"})
LIFECYCLES: tuple[Lifecycle, ...] = ("active", "deprecated", "retired")
DEFAULT_LISTED = frozenset({"active", "deprecated"})  # retired ones only when asked for


def model_index(models: Mapping[str, EmulatedModel]) -> dict[str, Served]:
    """Every id and alias -> (id, record); built once per call, not once per request."""
    index: dict[str, Served] = {}
    for model_id, model in models.items():
        for name in (*model.aliases, model_id):  # an id wins over an alias of the same name
            index[name] = (model_id, model)
    return index


def thinking_types(model: EmulatedModel) -> frozenset[str]:
    """The `thinking.type` values the model accepts (also its advertised capability)."""
    return CLAUDE5_THINKING if model.claude5 else frozenset(THINKING_TYPES)


def output_limit(model: EmulatedModel, betas: Iterable[str]) -> int:
    """The largest max_tokens a request may ask for with the batch's betas."""
    if model.output_300k and OUTPUT_300K_BETA in betas:
        return max(model.max_tokens, OUTPUT_300K_MAX_TOKENS)
    return model.max_tokens


def newest_first(models: Mapping[str, EmulatedModel]) -> list[Served]:
    """The list order of the real API: most recently released first (ties: table order)."""
    return sorted(models.items(), key=lambda item: item[1].created_at, reverse=True)


def models_page(
    models: Mapping[str, EmulatedModel],
    lifecycles: frozenset[str],
    after_id: str | None,
    before_id: str | None,
    limit: int,
) -> tuple[list[Served], bool]:
    """One page of `GET /v1/models`: `after_id` pages towards older models, `before_id`
    towards newer; a cursor may name a model the filter hides (or an alias)."""
    ordered = newest_first(models)
    rank = {model_id: n for n, (model_id, _) in enumerate(ordered)}
    listed = [served for served in ordered if served[1].lifecycle in lifecycles]
    if after_id is not None:
        cursor = _cursor(models, rank, after_id, "after_id")
        older = [served for served in listed if rank[served[0]] > cursor]
        return older[:limit], len(older) > limit
    if before_id is not None:
        cursor = _cursor(models, rank, before_id, "before_id")
        newer = [served for served in listed if rank[served[0]] < cursor]
        return newer[-limit:], len(newer) > limit
    return listed[:limit], len(listed) > limit


def _cursor(
    models: Mapping[str, EmulatedModel], rank: dict[str, int], name: str, field: str
) -> int:
    served = model_index(models).get(name)
    if served is None:
        raise invalid_request(f"{field}: model {name} not found.")
    return rank[served[0]]


def parse_lifecycles(values: Sequence[str]) -> frozenset[str]:
    """The `lifecycle[]` filter (up to 3 values); none given: active and deprecated."""
    if not values:
        return DEFAULT_LISTED
    if len(values) > len(LIFECYCLES):
        raise invalid_request(
            f"lifecycle: List should have at most {len(LIFECYCLES)} items after validation, "
            f"not {len(values)}"
        )
    for n, value in enumerate(values):
        if value not in LIFECYCLES:
            raise invalid_request(
                f"lifecycle.{n}: Input should be 'active', 'deprecated' or 'retired'"
            )
    return frozenset(values)


def find_model(models: Mapping[str, EmulatedModel], name: str) -> Served:
    """`GET /v1/models/{id}`: an alias resolves to its model; retired models stay readable."""
    served = model_index(models).get(name)
    if served is None:
        raise not_found(f"model: {name}")
    return served


def model_info(model_id: str, model: EmulatedModel) -> dict[str, Any]:
    """The SDK's `ModelInfo`, every field present."""
    return {
        "id": model_id,
        "type": "model",
        "display_name": model.display_name,
        "created_at": _rfc3339(model.created_at),
        "lifecycle": model.lifecycle,
        "deprecated_at": _rfc3339(model.deprecated_at),
        "retires_at": _rfc3339(model.retires_at),
        "max_tokens": model.max_tokens,
        "max_input_tokens": model.max_input_tokens,
        "line": model.line,
        "capabilities": _capabilities(model),
    }


def _rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _yes(supported: bool = True) -> dict[str, bool]:
    return {"supported": supported}


def _capabilities(model: EmulatedModel) -> dict[str, Any]:
    """Every key of the SDK's `ModelCapabilities`; all supported except thinking types the
    model refuses (the same set validation enforces)."""
    accepted = thinking_types(model)
    return {
        "batch": _yes(),
        "citations": _yes(),
        "code_execution": _yes(),
        "context_management": {
            **_yes(),
            "clear_thinking_20251015": _yes(),
            "clear_tool_uses_20250919": _yes(),
            "compact_20260112": _yes(),
        },
        "effort": {
            **_yes(),
            **{level: _yes() for level in ("low", "medium", "high", "xhigh", "max")},
        },
        "image_input": _yes(),
        "pdf_input": _yes(),
        "server_tools": {**_yes(), "code_execution": _yes(), "web_search": _yes()},
        "structured_outputs": _yes(),
        "thinking": {
            **_yes(),
            "types": {kind: _yes(kind in accepted) for kind in THINKING_TYPES},
        },
    }
