"""Intake settings (INTAKE_*)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.pricing import default_prices
from shared.settings import HttpSettings, NatsSettings


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore")

    # Comma separated; empty means the models of the price table.
    allowed_models: str = ""
    max_tokens: int = Field(128_000, ge=1)
    # NATS refuses larger messages by default (max_payload 1 MB) before intake sees them.
    max_task_bytes: int = Field(1 << 20, ge=1024)
    fetch_batch: int = Field(256, ge=1)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)

    def models(self) -> frozenset[str]:
        names = [m.strip() for m in self.allowed_models.split(",") if m.strip()]
        if names:
            return frozenset(names)
        prices = default_prices()
        return frozenset(prices.models) | frozenset(prices.aliases)
