"""Webhook endpoints (a per-tenant allow-list), their signatures, and the failure record.

Intake checks a task's endpoint name against the allow-list; the notifier POSTs results to it.
A URL never comes from a task, so batchbus cannot be pointed at an internal host.
"""

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from batchbus.shared import subjects
from batchbus.shared.models import Result

# HTTP headers of a delivery (the NATS header naming the endpoint is in shared/subjects.py).
SIGNATURE_HEADER = "Batchbus-Signature"
DELIVERY_HEADER = "Batchbus-Delivery"  # the same on every attempt of one result: dedup by it
ATTEMPT_HEADER = "Batchbus-Attempt"
DEFAULT_TOLERANCE_SECONDS = 300.0


class Endpoint(BaseModel):
    """One configured endpoint: where to POST, and the secret that signs each delivery."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    secret: SecretStr = Field(min_length=16)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        return value


class Endpoints:
    """The allow-list: tenant -> endpoint name -> Endpoint."""

    def __init__(self, tenants: Mapping[str, Mapping[str, Endpoint]] | None = None) -> None:
        self._tenants = {t: dict(names) for t, names in (tenants or {}).items()}

    def get(self, tenant: str, name: str) -> Endpoint | None:
        return self._tenants.get(tenant, {}).get(name)

    def names(self, tenant: str) -> frozenset[str]:
        return frozenset(self._tenants.get(tenant, ()))

    def tenants(self) -> dict[str, frozenset[str]]:
        return {tenant: frozenset(names) for tenant, names in self._tenants.items()}

    def __len__(self) -> int:
        return sum(len(names) for names in self._tenants.values())


class InvalidWebhookConfig(ValueError):
    """The endpoints configuration is unusable; the message never contains a secret."""


def parse_endpoints(data: Any, source: str = "webhook config") -> Endpoints:
    """`{"<tenant>": {"<name>": {"url": ..., "secret": ...}}}` -> Endpoints."""
    if not isinstance(data, dict):
        raise InvalidWebhookConfig(f"{source}: expected an object of tenants")
    tenants: dict[str, dict[str, Endpoint]] = {}
    for tenant, named in data.items():
        if not subjects.is_token(tenant) or not isinstance(named, dict):
            raise InvalidWebhookConfig(f"{source}: tenant {tenant[:64]!r} must match "
                                       f"{subjects.TOKEN_PATTERN} and map names to endpoints")
        tenants[tenant] = {}
        for name, spec in named.items():
            if not subjects.is_token(name):
                raise InvalidWebhookConfig(f"{source}: endpoint name {name[:64]!r} of {tenant} "
                                           f"must match {subjects.TOKEN_PATTERN}")
            try:
                tenants[tenant][name] = Endpoint.model_validate(spec)
            except ValidationError as exc:
                # Only where and what: pydantic's own text would quote the input, secret included.
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'endpoint'}: {e['msg']}"
                                     for e in exc.errors(include_input=False, include_url=False))
                raise InvalidWebhookConfig(f"{source}: {tenant}.{name}: {problems}") from None
    return Endpoints(tenants)


class WebhookSettings(BaseSettings):
    """Where the endpoints come from: a JSON file (WEBHOOKS_FILE) and/or inline (WEBHOOKS_JSON)."""

    model_config = SettingsConfigDict(env_prefix="WEBHOOKS_", extra="ignore", populate_by_name=True)

    file: str = ""
    # Inline JSON of the same shape, for deployments without a file; it holds secrets.
    inline: SecretStr = Field(SecretStr(""), validation_alias=AliasChoices("WEBHOOKS_JSON"))

    def load(self) -> Endpoints:
        """Both sources merged (inline wins per tenant); none configured is an empty list."""
        merged: dict[str, Any] = {}
        if self.file:
            try:
                text = Path(self.file).read_text()
            except OSError as exc:
                raise InvalidWebhookConfig(f"WEBHOOKS_FILE {self.file}: {exc.strerror}") from None
            merged |= _json(text, f"WEBHOOKS_FILE {self.file}")
        if self.inline.get_secret_value():
            merged |= _json(self.inline.get_secret_value(), "WEBHOOKS_JSON")
        return parse_endpoints(merged, "webhook config")


def _json(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:  # the position only, never the text
        raise InvalidWebhookConfig(f"{source}: not valid JSON (line {getattr(exc, 'lineno', '?')})") \
            from None
    if not isinstance(data, dict):
        raise InvalidWebhookConfig(f"{source}: expected an object of tenants")
    return data


def signature(secret: SecretStr | str, body: bytes, timestamp: int | None = None) -> str:
    """The `Batchbus-Signature` header value: `t=<unix seconds>,v1=<hex HMAC-SHA256>`, where the
    MAC covers `<t>.<body>` so that a captured delivery cannot be replayed later with a new
    timestamp.

    Args:
        secret: the endpoint's secret.
        body: the exact bytes POSTed.
        timestamp: unix seconds; now when omitted.
    """
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_mac(secret, t, body)}"


def verify_signature(secret: SecretStr | str, header: str | None, body: bytes,
                     tolerance: float = DEFAULT_TOLERANCE_SECONDS, now: float | None = None) -> bool:
    """For receivers: True when `header` signs `body` with `secret` and its timestamp is within
    `tolerance` seconds of now. Any `v1` entry may match (several are sent while a secret is
    rotated); malformed headers are simply False.

    Args:
        secret: the endpoint's secret, as configured in batchbus.
        header: the request's `Batchbus-Signature` header.
        body: the raw request body, before any JSON parsing.
        tolerance: the largest accepted age (or clock skew) of the timestamp, in seconds.
        now: unix seconds to compare with; the clock when omitted.
    """
    fields = _fields(header or "")
    try:
        t = int(fields.get("t", [""])[0])
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - t) > tolerance:
        return False
    expected = _mac(secret, t, body)
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))


def _mac(secret: SecretStr | str, t: int, body: bytes) -> str:
    key = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    return hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def _fields(header: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            found.setdefault(key, []).append(value)
    return found


class WebhookFailure(BaseModel):
    """A result that could not be delivered to its endpoint, on
    `batchbus.deadletters.webhooks.<tenant>` (operators redeliver from it)."""

    tenant: str
    task_id: str
    webhook: str  # the endpoint's name; its URL and secret are never published
    delivery_id: str
    attempts: int
    error: str  # the last attempt's HTTP status or transport error
    result: Result

