"""Who may call the API (x-api-key or Bearer), with which anthropic-version and betas."""

from __future__ import annotations

from starlette.datastructures import Headers

from batchbus.emulator.errors import ApiError, invalid_request

DEFAULT_VERSION = "2023-06-01"


def presented_key(headers: Headers) -> str | None:
    """The key from `x-api-key`, else from `Authorization: Bearer` (what SDK 2.x sends)."""
    key = headers.get("x-api-key", "").strip()
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def check_auth(headers: Headers, api_keys: set[str] | None) -> None:
    """`api_keys=None` accepts any non-empty key."""
    key = presented_key(headers)
    if key is None:
        raise ApiError(401, "x-api-key header is required", "authentication_error")
    if api_keys is not None and key not in api_keys:
        raise ApiError(401, "API key is invalid.", "authentication_error")


def api_version(headers: Headers, accepted: set[str]) -> str:
    """The request's anthropic-version; a missing header counts as the oldest version."""
    version = headers.get("anthropic-version")
    if version is None:
        return DEFAULT_VERSION
    if version not in accepted:
        raise invalid_request(f"anthropic-version: invalid version {version!r}")
    return version


def request_betas(headers: Headers, known: set[str]) -> tuple[str, ...]:
    """The `anthropic-beta` names (comma separated, possibly over several headers); an
    unknown name is a 400, as from the real API."""
    names = [
        name.strip()
        for value in headers.getlist("anthropic-beta")
        for name in value.split(",")
        if name.strip()
    ]
    unknown = [name for name in names if name not in known]
    if unknown:
        listed = ", ".join(f"`{name}`" for name in unknown)
        raise invalid_request(
            f"Unexpected value(s) {listed} for the `anthropic-beta` header. Please consult our "
            "documentation at docs.claude.com or try again without the header."
        )
    return tuple(dict.fromkeys(names))  # in order, once each
