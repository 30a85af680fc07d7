"""Notifier settings (NOTIFIER_*)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import AnthropicSettings, HttpSettings, NatsSettings


class NotifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore")

    max_attempts: int = Field(3, ge=1, le=20)
    # A retried attempt waits this long before it is batched again, doubling per attempt.
    retry_delay_seconds: float = Field(30.0, ge=0)
    retry_max_delay_seconds: float = Field(900.0, ge=0)
    # A notifier that dies mid-file leaves its batch to another after this long.
    ack_wait_seconds: float = Field(300.0, ge=1)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    anthropic: AnthropicSettings = Field(default_factory=AnthropicSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
