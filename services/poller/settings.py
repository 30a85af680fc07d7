"""Poller settings (POLLER_*)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from batchbus.shared.settings import AnthropicSettings, HttpSettings, NatsSettings


class PollerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POLLER_", extra="ignore")

    # Sweeps of every batch in flight: this often while batches appear or end, backing off
    # to the maximum while nothing changes (so an end is noticed within it).
    interval_seconds: float = Field(10.0, gt=0)
    max_interval_seconds: float = Field(30.0, gt=0)
    # The poller's share of the Batches API rate limit (1,000 a minute at the lowest tier,
    # for every batch endpoint together): sweeps are spaced to stay under it.
    max_calls_per_minute: float = Field(60.0, gt=0)
    # One poller polls at a time; a standby takes over this long after it stops renewing.
    lease_seconds: float = Field(15.0, gt=0)
    # A batch still not ended this long after its expires_at is given up: its requests count
    # as expired (and are retried) instead of being tracked for ever.
    expiry_grace_seconds: float = Field(3600.0, ge=0)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    anthropic: AnthropicSettings = Field(default_factory=AnthropicSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
