"""Pure batching logic: custom ids, request sizes, beta sets and the flush policy (count,
bytes, time, and a change of betas)."""

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic_core import to_json

T = TypeVar("T")
FlushReason = Literal["count", "bytes", "time", "betas"]
# A batch's betas (its create's `anthropic-beta` header), sorted and each once: every request
# of a batch gets them, so only tasks with equal sets share a batch.
Betas = tuple[str, ...]

BODY_CHUNK = 1000  # requests per encoded piece of a create body
# `{"requests":[` ... `]}` around the comma-separated requests.
ENVELOPE_BYTES = len(b'{"requests":[]}')


def custom_id(tenant: str, task_id: str, attempt: int) -> str:
    """Deterministic, API-safe id of one task attempt (35 chars of [a-z2-7-])."""
    digest = hashlib.blake2b(f"{tenant}/{task_id}".encode(), digest_size=20).digest()
    return f"{base64.b32encode(digest).decode().rstrip('=').lower()}-a{attempt}"


def encode_request(custom_id: str, params: dict[str, Any]) -> bytes:
    """One request of a create body, compact UTF-8 JSON as the SDK would send it. Encoded
    once, when its task is taken: its length is its size, and the body joins these bytes."""
    encoded = to_json(params)  # pydantic's encoder: several times json.dumps' speed
    if b"NaN" in encoded or b"Infinity" in encoded:
        # It writes NaN and Infinity as bare words, which are not JSON; json.dumps refuses
        # them (ValueError), and takes back the rest: those words were inside a string.
        encoded = json.dumps(params, ensure_ascii=False, separators=(",", ":"),
                             allow_nan=False).encode()
    # A custom id holds no character JSON escapes.
    return b"".join((b'{"custom_id":"', custom_id.encode(), b'","params":', encoded, b"}"))


def request_head(custom_id: str) -> bytes:
    """A request up to its params, for params sent as stored (a `Streamed` request)."""
    return b"".join((b'{"custom_id":"', custom_id.encode(), b'","params":'))


@dataclass(frozen=True, slots=True)
class Streamed:
    """A request whose params are read only while the body is sent (params stored in the
    tenant's payload bucket, up to 32 MB each): the bytes before them, their size, and
    their reader, which checks they are still that size."""

    head: bytes
    params_bytes: int
    read: Callable[[], AsyncIterator[bytes]]

    def __len__(self) -> int:
        return len(self.head) + self.params_bytes + 1  # and its closing brace


Request = bytes | Streamed


def batch_body(requests: Sequence[Request]) -> tuple[int, AsyncIterator[bytes]]:
    """The create call's JSON body from encoded requests: its length, and the body itself
    in pieces of BODY_CHUNK requests, each joined only when it is sent. The requests are
    held already; a joined body, or a socket buffering the unsent rest of a big piece,
    would hold them a second time (the SDK's own path deep-copies every request first).
    Streamed params are read a chunk at a time as they are sent: a batch of a hundred 5 MB
    documents is never in memory at once."""
    length = ENVELOPE_BYTES + sum(len(r) for r in requests) + max(len(requests) - 1, 0)

    async def pieces() -> AsyncIterator[bytes]:
        yield b'{"requests":['
        run: list[bytes] = []  # inline requests not yet sent
        comma = b""  # before every request but the first
        for request in requests:
            if isinstance(request, bytes):
                run.append(request)
                if len(run) < BODY_CHUNK:
                    continue
            if run:
                yield comma + b",".join(run)
                run, comma = [], b","
            if isinstance(request, Streamed):
                yield comma + request.head
                comma = b","
                async for chunk in request.read():
                    yield chunk
                yield b"}"
        if run:
            yield comma + b",".join(run)
        yield b"]}"

    return length, pieces()


def prefix_key(params: dict[str, Any]) -> str:
    """Digest of what prompt caching can share: model, system prompt and tools. Equal
    prompts get equal keys; it orders the requests of a batch, so requests that can share
    a prompt cache are side by side."""
    model, system, tools = params.get("model"), params.get("system"), params.get("tools")
    if tools is None and isinstance(model, str) and isinstance(system, str | None):
        shared = f"{model}\0{system}"  # the common case, without a JSON encoding
    else:
        shared = json.dumps([model, system, tools], sort_keys=True, default=str)
    return hashlib.blake2b(shared.encode(errors="surrogatepass"), digest_size=8).hexdigest()


@dataclass(frozen=True)
class FlushPolicy:
    max_requests: int
    max_bytes: int
    max_wait: float


@dataclass
class PendingBatch(Generic[T]):
    """Requests waiting for a flush, all with the same betas; `now` is a monotonic clock
    reading in seconds."""

    policy: FlushPolicy
    items: list[T] = field(default_factory=list)
    bytes: int = ENVELOPE_BYTES
    oldest: float | None = None
    betas: Betas = ()  # of every item; set by the first

    def fits(self, size: int) -> bool:
        return (len(self.items) < self.policy.max_requests
                and self.bytes + size <= self.policy.max_bytes)

    def admits(self, betas: Betas) -> bool:
        return not self.items or betas == self.betas

    def flush_before(self, betas: Betas, size: int) -> FlushReason | None:
        """Why the pending requests must go before a request of `betas` and `size` can join
        them, or None. Never a reason to flush nothing."""
        if not self.items:
            return None
        if not self.admits(betas):
            return "betas"
        return None if self.fits(size) else "bytes"

    def add(self, item: T, size: int, now: float, betas: Betas = ()) -> None:
        if not self.admits(betas):
            raise ValueError(f"betas {betas} cannot join a batch of {self.betas}")
        self.betas = betas
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
        self.bytes, self.oldest, self.betas = ENVELOPE_BYTES, None, ()
        return items


def distinct_count(requests: int, taken: set[int]) -> int:
    """The largest batch size up to `requests` that no unresolved intent has (1 at least:
    a single request is sent even then, and waits if its create is in doubt)."""
    while requests > 1 and requests in taken:
        requests -= 1
    return requests
