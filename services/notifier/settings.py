"""Notifier settings (NOTIFIER_*)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from batchbus.shared.settings import AnthropicSettings, HttpSettings, NatsSettings
from batchbus.shared.webhooks import WebhookSettings


class NotifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore")

    max_attempts: int = Field(3, ge=1, le=20)
    # A retried attempt waits this long before it is batched again, doubling per attempt.
    retry_delay_seconds: float = Field(30.0, ge=0)
    retry_max_delay_seconds: float = Field(900.0, ge=0)
    # A notifier that dies mid-file leaves its batch to another after this long; a live one
    # keeps its work with in_progress() beats every quarter of it, however long it takes.
    ack_wait_seconds: float = Field(30.0, ge=1)
    # Real-time Messages API calls (tasks routed around the batch path) made at once.
    realtime_concurrency: int = Field(8, ge=1, le=1024)
    # Webhook deliveries: attempts per result, back-off doubling from the delay up to the cap,
    # the timeout of one POST, and how many POSTs run at once.
    webhook_max_attempts: int = Field(8, ge=1, le=50)
    webhook_retry_delay_seconds: float = Field(5.0, ge=0)
    webhook_retry_max_delay_seconds: float = Field(600.0, ge=0)
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120)
    webhook_concurrency: int = Field(32, ge=1, le=1024)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    anthropic: AnthropicSettings = Field(default_factory=AnthropicSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
