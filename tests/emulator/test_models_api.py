"""The Models API (`GET /v1/models`, `GET /v1/models/{id}`) through the real SDK, and the
model table that tests change at runtime."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.types import ModelInfo
from pydantic import BaseModel

from batchbus.emulator import EmulatorConfig, EmulatorHandle, FaultRule
from batchbus.emulator.config import OUTPUT_300K_BETA, catalog_models
from batchbus.shared.catalog import default_catalog
from tests.emulator.helpers import AdminError, admin, make_client


def all_models(client: anthropic.Anthropic, **kwargs: Any) -> list[ModelInfo]:
    return list(client.models.list(**kwargs))


def missing_keys(cls: type[BaseModel], data: dict[str, Any], where: str = "") -> list[str]:
    """Keys the SDK class declares that `data` lacks, recursing into nested SDK models."""
    missing = []
    for name, field in cls.model_fields.items():
        if name not in data:
            missing.append(f"{where}{name}")
            continue
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            missing += missing_keys(nested, data[name], f"{where}{name}.")
    return missing


def test_default_table_comes_from_the_catalog(emu: EmulatorHandle) -> None:
    models = emu.state.config.models
    catalog = default_catalog()
    assert set(models) == set(catalog.models)
    assert models["claude-opus-5"].lifecycle == "active", "legacy is active to the API"
    assert models["claude-opus-4-5"].lifecycle == "deprecated"
    assert models["claude-sonnet-4-5"].lifecycle == "retired"
    assert models["claude-haiku-5-5"].claude5 and not models["claude-haiku-4-5"].claude5
    big = catalog.betas[OUTPUT_300K_BETA].models
    assert big is not None and "claude-opus-5-5" in big
    assert frozenset(m for m, model in models.items() if model.output_300k) == big
    assert "claude-haiku-4-5-20251001" in models["claude-haiku-4-5"].aliases
    assert models["claude-haiku-4-5"].max_tokens == 64_000
    assert models["claude-opus-5-5"].line == "opus"
    assert catalog_models(catalog) == models


def test_list_shows_active_and_deprecated_newest_first(client: anthropic.Anthropic) -> None:
    listed = all_models(client, limit=1000)
    lifecycles = {model.lifecycle for model in listed}
    assert lifecycles == {"active", "deprecated"}
    assert [m.created_at for m in listed] == sorted((m.created_at for m in listed), reverse=True)
    ids = [model.id for model in listed]
    assert "claude-opus-4-5" in ids and "claude-sonnet-4-5" not in ids
    assert ids.index("claude-opus-5-5") < ids.index("claude-haiku-4-5")


def test_lifecycle_filter_uses_the_sdk_bracket_format(client: anthropic.Anthropic) -> None:
    raw = client.models.with_raw_response.list(lifecycle=["retired"])
    assert "lifecycle%5B%5D=retired" in str(raw.http_request.url)
    retired = raw.parse()
    assert retired.data and {model.lifecycle for model in retired.data} == {"retired"}
    assert "claude-sonnet-4-5" in [model.id for model in retired.data]
    every = all_models(client, lifecycle=["active", "deprecated", "retired"], limit=1000)
    assert len(every) == len(client.models.list(limit=1000).data) + len(retired.data)


def test_auto_paging_visits_every_model_once(client: anthropic.Anthropic) -> None:
    whole = [model.id for model in client.models.list(limit=1000).data]
    first = client.models.list(limit=5)
    assert first.has_more and len(first.data) == 5
    assert first.first_id == first.data[0].id and first.last_id == first.data[-1].id
    assert [model.id for model in all_models(client, limit=5)] == whole


def test_before_id_pages_towards_newer_models(client: anthropic.Anthropic) -> None:
    whole = [model.id for model in client.models.list(limit=1000).data]
    page = client.models.list(before_id=whole[6], limit=3)
    assert [model.id for model in page.data] == whole[3:6] and page.has_more
    backwards = [model.id for model in all_models(client, before_id=whole[6], limit=2)]
    assert backwards == whole[4:6] + whole[2:4] + whole[0:2], "the SDK pages on via first_id"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"lifecycle": ["gone"]}, "lifecycle.0: Input should be 'active', 'deprecated' or 'retired'"),
        (
            {"lifecycle": ["active", "deprecated", "retired", "active"]},
            "lifecycle: List should have at most 3 items after validation, not 4",
        ),
        ({"limit": 0}, "limit: Input should be greater than or equal to 1"),
        ({"after_id": "claude-nope-1"}, "after_id: model claude-nope-1 not found."),
    ],
)
def test_bad_list_queries_are_400(
    client: anthropic.Anthropic, query: dict[str, Any], message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.models.list(**query)
    assert caught.value.api_message == message


def test_model_info_has_every_sdk_field(client: anthropic.Anthropic) -> None:
    raw = client.models.with_raw_response.retrieve("claude-opus-5-5")
    body = raw.http_response.json()
    assert missing_keys(ModelInfo, body) == []
    info = raw.parse()
    assert (info.id, info.type, info.lifecycle, info.line) == (
        "claude-opus-5-5",
        "model",
        "active",
        "opus",
    )
    assert info.display_name == "Claude Opus 5.5" and info.max_tokens == 128_000
    assert info.created_at.tzinfo is not None
    assert info.deprecated_at is None and info.retires_at is None
    assert info.capabilities is not None and info.capabilities.batch.supported


def test_thinking_capability_follows_the_claude5_rule(client: anthropic.Anthropic) -> None:
    claude5 = client.models.retrieve("claude-sonnet-5-5").capabilities
    older = client.models.retrieve("claude-sonnet-4-6").capabilities
    assert claude5 is not None and older is not None
    types = claude5.thinking.types
    assert (types.adaptive.supported, types.disabled.supported) == (True, True)
    assert (types.enabled.supported, types.between_tools.supported) == (False, False)
    assert older.thinking.types.enabled.supported


def test_alias_and_retired_models_are_retrievable(client: anthropic.Anthropic) -> None:
    assert client.models.retrieve("claude-haiku-4-5-20251001").id == "claude-haiku-4-5"
    retired = client.models.retrieve("claude-sonnet-4-5")
    assert retired.lifecycle == "retired"
    assert retired.retires_at is not None and retired.retires_at.date().isoformat() == "2026-11-30"
    deprecated = client.models.retrieve("claude-opus-4-5")
    assert deprecated.lifecycle == "deprecated" and deprecated.retires_at is not None


def test_unknown_model_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.models.retrieve("claude-nope-9")
    assert caught.value.type == "not_found_error"
    assert caught.value.api_message == "model: claude-nope-9"


def test_models_api_checks_auth_and_takes_faults(emu: EmulatorHandle) -> None:
    emu.configure(api_keys={"good"}, faults=[FaultRule(operation="models", status=529)])
    with make_client(emu, api_key="bad") as sdk, pytest.raises(anthropic.AuthenticationError):
        sdk.models.list()
    with make_client(emu, api_key="good") as sdk:
        with pytest.raises(anthropic.OverloadedError):
            sdk.models.retrieve("claude-opus-5-5")
        assert sdk.models.retrieve("claude-opus-5-5").id == "claude-opus-5-5"
    assert emu.state.stats()["calls"]["models"] == 3


def test_the_table_changes_at_runtime(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    """The API moves on after the catalog file was written: a retirement, a new model."""
    emu.set_model("claude-opus-5", lifecycle="retired", retires_at="2026-12-01T00:00:00Z")
    admin(
        emu,
        "PUT",
        "/_emulator/models/claude-opus-6",
        {"max_tokens": 256_000, "display_name": "Claude Opus 6", "created_at": "2027-02-01"},
    )
    listed = [model.id for model in client.models.list(limit=1000).data]
    assert listed[0] == "claude-opus-6" and "claude-opus-5" not in listed
    assert client.models.retrieve("claude-opus-5").lifecycle == "retired"
    assert client.models.retrieve("claude-opus-6").max_tokens == 256_000
    admin(emu, "DELETE", "/_emulator/models/claude-opus-6")
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-opus-6")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/_emulator/models/claude-new-1", {"max_tokens": 10}),  # a new model needs more
        ("/_emulator/models/claude-opus-5-5", {"lifecycle": "gone"}),
        ("/_emulator/models/claude-opus-5-5", {"colour": "blue"}),
    ],
)
def test_invalid_model_updates_are_400(emu: EmulatorHandle, path: str, body: Any) -> None:
    with pytest.raises(AdminError) as caught:
        admin(emu, "PUT", path, body)
    assert caught.value.status == 400
    assert emu.state.config.models["claude-opus-5-5"].lifecycle == "active"


def test_models_config_round_trips(emu: EmulatorHandle) -> None:
    """GET /_emulator/config gives JSON that PUT (and a --config file) accepts again."""
    config = admin(emu, "GET", "/_emulator/config")
    assert config["models"]["claude-opus-4-5"]["retires_at"] == "2027-01-22T00:00:00Z"
    assert EmulatorConfig.model_validate(config) == emu.state.config
    admin(emu, "PUT", "/_emulator/config", {"models": config["models"]})
    assert emu.state.config.models == EmulatorConfig().models
