"""Settings every service shares, read from the environment (composed, never inherited)."""

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class NatsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NATS_", extra="ignore")

    url: str = "nats://127.0.0.1:4222"  # comma separated for a cluster
    results_max_age_seconds: float = 7 * 24 * 3600
    # A retried attempt reads its task back from the internal stream, so keep it past 24 h.
    internal_max_age_seconds: float = 8 * 24 * 3600
    task_ids_ttl_seconds: float = 7 * 24 * 3600
    replicas: int = Field(1, ge=1, le=5)
    # Credentials and TLS (README "Security"); empty means not used.
    user: str = ""
    password: SecretStr = SecretStr("")
    tls_ca: str = ""  # CA file that signed the server's certificate (else the system's CAs)
    tls_cert: str = ""  # client certificate and key, for a server that verifies clients
    tls_key: str = ""

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.url.split(",") if s.strip()]


class AnthropicSettings(BaseSettings):
    """The SDK's own variables; the key is a secret and is never logged."""

    model_config = SettingsConfigDict(env_prefix="ANTHROPIC_", extra="ignore")

    api_key: SecretStr = SecretStr("")
    base_url: str | None = None
    timeout_seconds: float = 120.0

    @field_validator("base_url")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        # `ANTHROPIC_BASE_URL=` (as compose passes an unset variable) means the SDK default.
        return value or None


class HttpSettings(BaseSettings):
    """Where a service serves /metrics, /healthz and /readyz (loopback unless told)."""

    model_config = SettingsConfigDict(extra="ignore")

    host: str = Field("127.0.0.1", validation_alias=AliasChoices("METRICS_HOST"))
    port: int | None = Field(None, validation_alias=AliasChoices("METRICS_PORT"))
