"""Intake settings (INTAKE_*)."""

from decimal import Decimal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from batchbus.services.intake.budgets import parse_budgets
from batchbus.services.intake.routing import RoutePolicy
from batchbus.shared.pricing import default_prices
from batchbus.shared.settings import HttpSettings, NatsSettings
from batchbus.shared.webhooks import WebhookSettings


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore")

    # Comma separated; empty means the models of the price table.
    allowed_models: str = ""
    max_tokens: int = Field(128_000, ge=1)
    # NATS refuses larger messages by default (max_payload 1 MB) before intake sees them.
    max_task_bytes: int = Field(1 << 20, ge=1024)
    fetch_batch: int = Field(256, ge=1)
    # Daily USD per tenant: `{"acme": 5}` or `acme=5,beta=10.50`; a tenant not named has none.
    budgets: str = ""
    # Routing of tasks with a deadline (services/intake/routing.py). The batcher's flush
    # window is read from the batcher's own variable, so the two cannot disagree.
    batcher_max_wait_seconds: float = Field(
        120.0, gt=0, validation_alias=AliasChoices("BATCHER_MAX_WAIT_SECONDS"))
    route_quantile: float = Field(0.95, gt=0, le=1)
    route_margin: float = Field(1.5, ge=1)
    route_min_history: int = Field(10, ge=1)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)

    @field_validator("budgets")
    @classmethod
    def _budgets_parse(cls, value: str) -> str:
        parse_budgets(value)  # a bad setting stops the start, with what is wrong
        return value

    def route_policy(self) -> RoutePolicy:
        return RoutePolicy(max_wait_seconds=self.batcher_max_wait_seconds,
                           quantile=self.route_quantile, margin=self.route_margin,
                           min_history=self.route_min_history)

    def budgets_usd(self) -> dict[str, Decimal]:
        return parse_budgets(self.budgets)

    def models(self) -> frozenset[str]:
        names = [m.strip() for m in self.allowed_models.split(",") if m.strip()]
        if names:
            return frozenset(names)
        prices = default_prices()
        return frozenset(prices.models) | frozenset(prices.aliases)
