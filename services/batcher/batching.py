"""Pure batching logic: custom ids, request sizes and the count/bytes/time flush policy."""

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")
FlushReason = Literal["count", "bytes", "time"]

BODY_CHUNK = 1000  # requests per encoded piece of a create body
# `{"requests":[` ... `]}` around the comma-separated requests.
ENVELOPE_BYTES = len(b'{"requests":[]}')


def custom_id(tenant: str, task_id: str, attempt: int) -> str:
    """Deterministic, API-safe id of one task attempt (35 chars of [a-z2-7-])."""
    digest = hashlib.blake2b(f"{tenant}/{task_id}".encode(), digest_size=20).digest()
    return f"{base64.b32encode(digest).decode().rstrip('=').lower()}-a{attempt}"


def request_bytes(request: dict[str, Any]) -> int:
    """Bytes of one request as the SDK encodes it (compact, UTF-8), plus its comma."""
    text = json.dumps(request, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return len(text.encode()) + 1


def batch_body(requests: Iterable[dict[str, Any]]) -> list[bytes]:
    """The create call's JSON body, encoded as request_bytes counts it, in pieces of
    BODY_CHUNK requests. One C-level json pass per piece (the SDK's own path deep-copies
    every request first: seconds for 100,000), and pieces rather than one bytes object:
    joining them, or a socket buffering the unsent rest of one, would hold the body twice."""
    parts = [b'{"requests":[']
    chunk: list[dict[str, Any]] = []
    for request in requests:
        chunk.append(request)
        if len(chunk) == BODY_CHUNK:
            parts.append(_piece(chunk, first=len(parts) == 1))
            chunk = []
    if chunk:
        parts.append(_piece(chunk, first=len(parts) == 1))
    parts.append(b"]}")
    return parts


def _piece(requests: list[dict[str, Any]], first: bool) -> bytes:
    text = json.dumps(requests, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text[1:-1] if first else "," + text[1:-1]).encode()  # without the list's [ ]


@dataclass(frozen=True)
class FlushPolicy:
    max_requests: int
    max_bytes: int
    max_wait: float


@dataclass
class PendingBatch(Generic[T]):
    """Requests waiting for a flush; `now` is a monotonic clock reading in seconds."""

    policy: FlushPolicy
    items: list[T] = field(default_factory=list)
    bytes: int = ENVELOPE_BYTES
    oldest: float | None = None

    def fits(self, size: int) -> bool:
        return (len(self.items) < self.policy.max_requests
                and self.bytes + size <= self.policy.max_bytes)

    def add(self, item: T, size: int, now: float) -> None:
        self.items.append(item)
        self.bytes += size
        if self.oldest is None:
            self.oldest = now

    def flush_reason(self, now: float) -> FlushReason | None:
        if len(self.items) >= self.policy.max_requests:
            return "count"
        if self.oldest is not None and now - self.oldest >= self.policy.max_wait:
            return "time"
        return None

    def time_left(self, now: float) -> float | None:
        """Seconds until the time window closes, or None when nothing is pending."""
        return None if self.oldest is None else self.oldest + self.policy.max_wait - now

    def take(self) -> list[T]:
        items, self.items = self.items, []
        self.bytes, self.oldest = ENVELOPE_BYTES, None
        return items


def distinct_count(requests: int, taken: set[int]) -> int:
    """The largest batch size up to `requests` that no unresolved intent has (1 at least:
    a single request is sent even then, and waits if its create is in doubt)."""
    while requests > 1 and requests in taken:
        requests -= 1
    return requests
