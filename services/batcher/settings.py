"""Batcher settings (BATCHER_*); limits above the API's are refused at start-up."""

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from batchbus.shared.settings import AnthropicSettings, HttpSettings, NatsSettings

API_MAX_REQUESTS = 100_000
API_MAX_BYTES = 256 * 1000 * 1000


class BatcherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHER_", extra="ignore")

    max_requests: int = Field(API_MAX_REQUESTS, ge=1, le=API_MAX_REQUESTS)
    # Below the API's 256 MB so a proxy's framing can never push a batch over it.
    max_bytes: int = Field(200 * 1000 * 1000, ge=2 << 20, le=API_MAX_BYTES)
    max_wait_seconds: float = Field(120.0, gt=0)
    fetch_batch: int = Field(1000, ge=1)
    # After a create whose outcome is unknown, wait this long before listing batches.
    doubt_settle_seconds: float = Field(30.0, ge=0)
    # Back-off after the API refused a create (429, 529, 5xx...), doubled up to the max.
    retry_delay_seconds: float = Field(5.0, gt=0)
    retry_max_delay_seconds: float = Field(300.0, gt=0)
    # Held task messages are kept alive with in_progress(); a dead batcher's come back after this.
    ack_wait_seconds: float = Field(30.0, ge=1)
    # An intent older than this has no live create behind it and is resolved by any replica.
    intent_stale_seconds: float = Field(300.0, gt=0)
    # How often each replica looks for stale intents.
    recovery_interval_seconds: float = Field(30.0, gt=0)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    anthropic: AnthropicSettings = Field(default_factory=AnthropicSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)

    @model_validator(mode="after")
    def _stale_after_a_create_can_end(self) -> "BatcherSettings":
        # A live replica's create ends (or times out) within the API timeout; only after
        # that may another replica decide what became of its intent.
        if self.intent_stale_seconds <= self.anthropic.timeout_seconds + self.doubt_settle_seconds:
            raise ValueError("BATCHER_INTENT_STALE_SECONDS must exceed ANTHROPIC_TIMEOUT_SECONDS "
                             "+ BATCHER_DOUBT_SETTLE_SECONDS")
        return self
