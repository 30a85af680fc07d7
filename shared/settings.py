"""Settings every service shares, read from the environment (composed, never inherited)."""

from typing import TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class NatsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NATS_", extra="ignore")

    url: str = "nats://127.0.0.1:4222"  # comma separated for a cluster
    results_max_age_seconds: float = 7 * 24 * 3600
    # A retried attempt reads its task back from the internal stream, so keep it past 24 h.
    internal_max_age_seconds: float = 8 * 24 * 3600
    task_ids_ttl_seconds: float = 7 * 24 * 3600
    # Stored task params and answers (docs/payloads.md): as long as the internal stream keeps
    # the accepted task that names its params, and past its Result's retention. A task's
    # params go sooner, once its final result is stored.
    payloads_max_age_seconds: float = 8 * 24 * 3600
    # A retired batch record leaves a marker this long (shared/records.py): far past any
    # redelivery or recovery that could look for it.
    retired_marker_ttl_seconds: float = Field(24 * 3600, ge=1)
    replicas: int = Field(1, ge=1, le=5)
    # A service that cannot reach NATS for this long at start exits (non-zero, saying so).
    connect_timeout_seconds: float = Field(60.0, gt=0)
    # Credentials and TLS (docs/security.md); empty means not used.
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


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S]) -> S:
    """`cls()` from the environment. A bad value stops the service with one line a problem,
    naming the variable to fix (a traceback would name pydantic's field instead)."""
    try:
        return cls()
    except ValidationError as exc:
        raise SystemExit("\n".join(f"error: {p}" for p in problems(cls, exc))) from None


def problems(cls: type[BaseSettings], exc: ValidationError) -> list[str]:
    """Each error of `exc` as `VARIABLE: what is wrong` (the value is never repeated: it may
    be a secret)."""
    model = _nested(cls).get(exc.title, cls)
    found = []
    for error in exc.errors(include_url=False, include_input=False):
        # A field's name, an alias (the variable already), or none: the whole model's.
        field = str(error["loc"][0]) if error["loc"] else None
        if field in model.model_fields:
            field = variable(model, field)
        found.append(f"{field}: {error['msg']}" if field else error["msg"])
    return found


def variable(model: type[BaseSettings], field: str) -> str:
    """The environment variable a settings field is read from."""
    alias = model.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    if isinstance(alias, str):
        return alias
    return (str(model.model_config.get("env_prefix", "")) + field).upper()


def _nested(cls: type[BaseSettings]) -> dict[str, type[BaseSettings]]:
    """The settings classes composed into `cls` (NatsSettings...), by name: their errors
    come from their own validation, titled with their own name."""
    found: dict[str, type[BaseSettings]] = {}
    for info in cls.model_fields.values():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseSettings):
            found[kind.__name__] = kind
            found |= _nested(kind)
    return found
