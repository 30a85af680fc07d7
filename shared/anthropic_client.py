"""The one place that builds an Anthropic SDK client from settings."""

from anthropic import AsyncAnthropic

from shared.settings import AnthropicSettings


def make_client(settings: AnthropicSettings, *, max_retries: int = 2) -> AsyncAnthropic:
    """A client for the batch endpoints; `max_retries=0` where a retry could pay twice."""
    return AsyncAnthropic(
        api_key=settings.api_key.get_secret_value() or None,
        base_url=settings.base_url,
        max_retries=max_retries,
        timeout=settings.timeout_seconds,
    )
