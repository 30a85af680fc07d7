"""Error bodies and HTTP error responses in the shapes of spec §7 (and the Cloudflare 413)."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

# HTTP status -> error.type (spec §7.2); statuses without an official type borrow the closest.
STATUS_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

DEFAULT_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request.",
    "authentication_error": "API key is invalid.",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found.",
    "conflict_error": "Conflict.",
    "request_too_large": "Request exceeds the maximum size",
    "rate_limit_error": "Number of requests has exceeded your rate limit.",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}


class ApiError(Exception):
    """Raised anywhere in request handling; rendered as the standard error body."""

    def __init__(self, status: int, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or error_type_for(status)


def invalid_request(message: str) -> ApiError:
    return ApiError(400, message, "invalid_request_error")


def not_found(message: str) -> ApiError:
    return ApiError(404, message, "not_found_error")


def error_type_for(status: int) -> str:
    if status in STATUS_TYPES:
        return STATUS_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def default_message(error_type: str) -> str:
    return DEFAULT_MESSAGES.get(error_type, error_type.replace("_", " ").capitalize())


def error_envelope(
    error_type: str,
    message: str,
    request_id: str | None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`{"type":"error","error":{type,message[,details]},"request_id":…}`."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if details is not None:
        error["details"] = details
    return {"type": "error", "error": error, "request_id": request_id}


def too_large_body() -> dict[str, Any]:
    """Cloudflare answers 413 before the API: no top-level type, no request_id."""
    message = DEFAULT_MESSAGES["request_too_large"]
    return {"error": {"type": "request_too_large", "message": message}}


def error_response(
    status: int,
    error_type: str,
    message: str,
    request_id: str,
    headers: dict[str, str] | None = None,
    details: dict[str, Any] | None = None,
) -> JSONResponse:
    if status == 413:
        return JSONResponse(too_large_body(), status_code=413, headers=headers)
    body = error_envelope(error_type, message, request_id, details)
    return JSONResponse(body, status_code=status, headers=headers)


def api_error_response(error: ApiError, request_id: str) -> JSONResponse:
    return error_response(error.status, error.error_type, error.message, request_id)
