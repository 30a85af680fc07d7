"""Intake settings (INTAKE_*)."""

from decimal import Decimal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from batchbus.services.intake.budgets import parse_budgets
from batchbus.services.intake.routing import RoutePolicy
from batchbus.shared.payloads import MAX_PARAMS_BYTES
from batchbus.shared.settings import AnthropicSettings, HttpSettings, NatsSettings
from batchbus.shared.webhooks import WebhookSettings


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore")

    # Comma separated; empty means every model the catalog and the Models API know.
    allowed_models: str = ""
    # A deployment's own cap on max_tokens; each model's limit applies anyway.
    max_tokens: int | None = Field(None, ge=1)
    # How often the Models API is read for lifecycles and limits; 0 reads only the data file.
    models_refresh_seconds: float = Field(3600.0, ge=0)
    # NATS refuses larger messages by default (max_payload 1 MB) before intake sees them.
    max_task_bytes: int = Field(1 << 20, ge=1024)
    # Params stored in the tenant's payload bucket (docs/payloads.md): 32 MiB, the Messages
    # API's request size limit, each being sent as one request.
    max_params_bytes: int = Field(MAX_PARAMS_BYTES, ge=1024)
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
    anthropic: AnthropicSettings = Field(default_factory=AnthropicSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value  # `INTAKE_MAX_TOKENS=`, as compose passes it

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

    def models(self) -> frozenset[str] | None:
        names = [m.strip() for m in self.allowed_models.split(",") if m.strip()]
        return frozenset(names) if names else None
