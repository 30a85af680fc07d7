"""Runtime configuration of the emulator: knobs for lifecycle, outcomes, usage and faults.

`EmulatorConfig` is what tests change at runtime; `EmulatorSettings` is what the CLI reads.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from batchbus.emulator.directives import parse_outcome

API_VERSIONS = frozenset({"2023-06-01", "2026-10-21"})

Operation = Literal["create", "retrieve", "list", "cancel", "delete", "results", "messages", "*"]

# Model id -> maximum output tokens (spec §9.2 ids; limits per §6, without the 300K beta).
DEFAULT_MODELS: dict[str, int] = {
    "claude-fable-5-2": 128_000,
    "claude-mythos-5-2": 128_000,
    "claude-haiku-5-5": 128_000,
    "claude-sonnet-5-5": 128_000,
    "claude-opus-5-5": 128_000,
    "claude-fable-5-1": 128_000,
    "claude-mythos-5-1": 128_000,
    "claude-sonnet-5": 128_000,
    "claude-fable-5": 128_000,
    "claude-mythos-5": 128_000,
    "claude-opus-5": 128_000,
    "claude-opus-4-8": 128_000,
    "claude-opus-4-7": 128_000,
    "claude-mythos-preview": 128_000,
    "claude-opus-4-6": 128_000,
    "claude-sonnet-4-6": 64_000,
    "claude-haiku-4-5": 64_000,
    "claude-haiku-4-5-20251001": 64_000,
    "claude-opus-4-5": 64_000,
    "claude-opus-4-5-20251101": 64_000,
    "claude-sonnet-4-5": 64_000,
    "claude-sonnet-4-5-20250929": 64_000,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class UsageOverride(_Strict):
    """Fixed usage reported for every succeeded request (output still capped at max_tokens)."""

    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cache_creation_input_tokens: int = Field(default=0, ge=0)
    cache_read_input_tokens: int = Field(default=0, ge=0)


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
    models: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_MODELS))
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
