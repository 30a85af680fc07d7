"""The one place that builds an Anthropic SDK client from settings, and reads what the API
says back that every service needs: a batch's request counts, a refusal's retry-after."""

from collections.abc import Sequence
from time import monotonic

import anthropic
from anthropic import AsyncAnthropic
from anthropic.types.messages import MessageBatch

from batchbus.shared.settings import AnthropicSettings


def make_client(settings: AnthropicSettings, *, max_retries: int = 2) -> AsyncAnthropic:
    """A client for the batch endpoints; `max_retries=0` where a retry could pay twice."""
    return AsyncAnthropic(
        api_key=settings.api_key.get_secret_value() or None,
        base_url=settings.base_url,
        max_retries=max_retries,
        timeout=settings.timeout_seconds,
    )


class ApiReachable:
    """A /readyz check: does the API answer this service? Cached, so probes cost few calls."""

    def __init__(self, client: AsyncAnthropic, ttl: float = 30.0) -> None:
        self.client = client.with_options(max_retries=0, timeout=1.5)
        self.ttl = ttl
        self.ok = False
        self.checked = float("-inf")

    async def __call__(self) -> bool:
        if monotonic() - self.checked >= self.ttl:
            self.ok = await self._answers()
            self.checked = monotonic()
        return self.ok

    async def _answers(self) -> bool:
        try:
            await self.client.messages.batches.list(limit=1)
        except anthropic.RateLimitError:
            return True  # busy, but there and accepting our key
        except anthropic.APIError:
            return False  # unreachable, down (5xx), or refusing our key (401/403)
        return True


# The API's five request counts of a batch, in the order events and digests list them.
REQUEST_COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")


def request_counts(batch: MessageBatch) -> dict[str, int]:
    return {name: int(getattr(batch.request_counts, name)) for name in REQUEST_COUNTS}


def beta_headers(betas: Sequence[str]) -> dict[str, str]:
    """What a call for a task with these betas sends: the `anthropic-beta` header, comma
    separated as the SDK's `betas=` sends it; nothing without betas."""
    return {"anthropic-beta": ",".join(betas)} if betas else {}


def retry_after(exc: anthropic.APIStatusError) -> float | None:
    """The seconds the API asks us to wait (its retry-after header), never negative; None
    when it names none."""
    try:
        return max(0.0, float(exc.response.headers.get("retry-after", "")))
    except ValueError:
        return None
