"""Runtime configuration of the emulator: knobs for lifecycle, outcomes, usage and faults.

`EmulatorConfig` is what tests change at runtime; `EmulatorSettings` is what the CLI reads.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from batchbus.emulator.directives import parse_outcome
from batchbus.shared.catalog import Catalog, ModelSpec, default_catalog

API_VERSIONS = frozenset({"2023-06-01", "2026-10-21"})

Operation = Literal[
    "create", "retrieve", "list", "cancel", "delete", "results", "messages", "models", "*"
]
Lifecycle = Literal["active", "deprecated", "retired"]
ModelLine = Literal["haiku", "sonnet", "opus", "fable", "mythos"]

# The one beta with behaviour here: max_tokens up to 300,000 on some models, batches only.
OUTPUT_300K_BETA = "output-300k-2026-03-24"
OUTPUT_300K_MAX_TOKENS = 300_000
_LINES: tuple[ModelLine, ...] = ("haiku", "sonnet", "opus", "fable", "mythos")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class UsageOverride(_Strict):
    """Fixed usage reported for every succeeded request (output still capped at max_tokens).

    `ephemeral_1h_input_tokens` is the part of the cache writes made with the 1-hour TTL;
    the rest of `cache_creation_input_tokens` is reported as 5-minute writes.
    """

    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cache_creation_input_tokens: int = Field(default=0, ge=0)
    cache_read_input_tokens: int = Field(default=0, ge=0)
    ephemeral_1h_input_tokens: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _split_fits(self) -> UsageOverride:
        if self.ephemeral_1h_input_tokens > self.cache_creation_input_tokens:
            raise ValueError("ephemeral_1h_input_tokens exceeds cache_creation_input_tokens")
        return self


class EmulatedModel(_Strict):
    """One model as the emulated API serves it (and lists it in `GET /v1/models`)."""

    lifecycle: Lifecycle = "active"
    max_tokens: int = Field(ge=1)  # without betas
    max_input_tokens: int | None = Field(default=None, ge=1)  # reported, not enforced
    display_name: str
    created_at: datetime
    deprecated_at: datetime | None = None
    retires_at: datetime | None = None
    line: ModelLine | None = None
    claude5: bool = False  # the Claude 5 request rules apply
    output_300k: bool = False  # OUTPUT_300K_BETA raises max_tokens to 300,000
    aliases: list[str] = Field(default_factory=list)

    @field_validator("created_at", "deprecated_at", "retires_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """A naive time is UTC, so every time prints with `Z`."""
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


def catalog_models(catalog: Catalog) -> dict[str, EmulatedModel]:
    """What the real API serves, as the catalog file describes it (legacy -> active)."""
    aliases: dict[str, list[str]] = {}
    for alias, model_id in catalog.aliases.items():
        aliases.setdefault(model_id, []).append(alias)
    released = _release_dates(catalog, aliases)
    big_output = _output_300k_models(catalog)
    return {
        model_id: _emulated(spec, released[model_id], aliases.get(model_id, []), big_output)
        for model_id, spec in catalog.models.items()
        if spec.lifecycle != "unlisted"
    }


def _output_300k_models(catalog: Catalog) -> frozenset[str]:
    beta = catalog.betas.get(OUTPUT_300K_BETA)
    if beta is None:
        return frozenset()
    return frozenset(catalog.models) if beta.models is None else beta.models


def _emulated(
    spec: ModelSpec, created_at: datetime, aliases: list[str], big_output: frozenset[str]
) -> EmulatedModel:
    retires_at = None if spec.retires_at is None else _midnight(spec.retires_at)
    return EmulatedModel(
        lifecycle="active" if spec.lifecycle in ("active", "legacy") else spec.lifecycle,
        max_tokens=spec.max_tokens or 4096,  # the file always gives one; 4096 is a safe floor
        display_name=display_name(spec.id),
        created_at=created_at,
        retires_at=retires_at,
        line=next((line for line in _LINES if line in spec.id.split("-")), None),
        claude5=any(rule.name == "claude-5" for rule in spec.rules),
        output_300k=spec.id in big_output,
        aliases=aliases,
    )


def _release_dates(catalog: Catalog, aliases: dict[str, list[str]]) -> dict[str, datetime]:
    """The date of a dated alias (`…-20251001`); otherwise a day before the model listed
    above it, as the file lists models newest first. Only the order matters to clients."""
    dates: dict[str, datetime] = {}
    previous = _midnight(catalog.checked)
    for model_id in catalog.models:
        dated = [alias[-8:] for alias in aliases.get(model_id, []) if alias[-8:].isdigit()]
        if dated:
            previous = _midnight(date.fromisoformat(max(dated)))
        else:
            previous -= timedelta(days=1)
        dates[model_id] = previous
    return dates


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def display_name(model_id: str) -> str:
    """`claude-opus-5-5` -> `Claude Opus 5.5`; `claude-3-5-haiku-latest` -> `Claude 3.5 Haiku Latest`."""
    words: list[str] = []
    for part in model_id.split("-"):
        if part.isdigit() and words and words[-1][-1].isdigit():
            words[-1] += f".{part}"
        else:
            words.append(part.capitalize())
    return " ".join(words)


def default_models() -> dict[str, EmulatedModel]:
    return catalog_models(default_catalog())


def default_betas() -> set[str]:
    return set(default_catalog().betas)


class OutcomeRule(_Strict):
    """Force an outcome on requests whose custom_id matches `custom_id_regex` (re.search)."""

    custom_id_regex: str
    outcome: str
    first: int | None = Field(default=None, ge=0)

    @field_validator("custom_id_regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value

    @field_validator("outcome")
    @classmethod
    def _known_outcome(cls, value: str) -> str:
        parse_outcome(value)
        return value


class FaultRule(_Strict):
    """Answer the next `times` calls of `operation` with an HTTP fault (or just a delay)."""

    operation: Operation = "*"
    status: int | None = Field(default=None, ge=400, le=599)
    times: int = Field(default=1, ge=0)
    retry_after: float | None = None
    retry_after_ms: float | None = None
    spend_limit: bool = False
    after_create: bool = False
    delay_seconds: float = Field(default=0.0, ge=0)
    should_retry: bool | None = None


class EmulatorConfig(_Strict):
    """Everything a test may tune; `PUT /_emulator/config` applies a partial update."""

    api_keys: set[str] | None = None
    api_versions: set[str] = Field(default_factory=lambda: set(API_VERSIONS))
    processing_seconds: float = Field(default=1.0, ge=0)
    cancel_seconds: float = Field(default=0.2, ge=0)
    time_scale: float = Field(default=1.0, ge=0)
    counts_mode: Literal["at_end", "incremental"] = "at_end"
    max_requests: int = Field(default=100_000, ge=1)
    max_body_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    max_messages_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    models: dict[str, EmulatedModel] = Field(default_factory=default_models)
    betas: set[str] = Field(default_factory=default_betas)
    usage_override: UsageOverride | None = None
    outcome_rules: list[OutcomeRule] = Field(default_factory=list)
    faults: list[FaultRule] = Field(default_factory=list)
    shuffle_results: bool = True


class EmulatorSettings(BaseSettings):
    """How `python -m batchbus.emulator` is started; env vars EMULATOR_HOST / _PORT / ... apply."""

    model_config = SettingsConfigDict(env_prefix="EMULATOR_")

    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    processing_seconds: float | None = None
    config: str | None = None
