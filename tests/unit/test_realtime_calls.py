"""The real-time route: which API failures are retried, the Result it builds, what its call sends."""

import json
from datetime import UTC, datetime
from typing import Any, cast

import anthropic
import httpx2
import pytest
from prometheus_client import CollectorRegistry

from batchbus.services.notifier.accounting import Accounting
from batchbus.services.notifier.metrics import NotifierMetrics
from batchbus.services.notifier.realtime import (
    RealtimeCalls,
    UnexpectedReply,
    classify_failure,
    realtime_result,
)
from batchbus.services.notifier.settings import NotifierSettings
from batchbus.shared.models import AcceptedTask, ErrorInfo
from batchbus.shared.pricing import default_prices
from batchbus.shared.settings import AnthropicSettings

REQUEST = httpx2.Request("POST", "http://api.test/v1/messages")


def status_error(status: int, kind: str | None, **headers: str) -> anthropic.APIStatusError:
    body = {"type": "error", "error": {"type": kind, "message": f"{kind} happened"}} if kind else None
    response = httpx2.Response(status, headers=headers, request=REQUEST)
    return anthropic.APIStatusError(f"HTTP {status}", response=response, body=body)


@pytest.mark.parametrize(("exc", "transient", "outcome", "kind"), [
    (status_error(429, "rate_limit_error"), True, "rate_limited", "rate_limit_error"),
    (status_error(529, "overloaded_error"), True, "overloaded", "overloaded_error"),
    (status_error(500, "api_error"), True, "server_error", "api_error"),
    (status_error(503, None), True, "server_error", "api_error"),
    (status_error(408, "timeout_error"), True, "client_error", "timeout_error"),
    (status_error(400, "invalid_request_error"), False, "client_error", "invalid_request_error"),
    (status_error(404, "not_found_error"), False, "client_error", "not_found_error"),
    (status_error(413, None), False, "client_error", "invalid_request_error"),
    # The API's own word wins over the status code.
    (status_error(500, "api_error", **{"x-should-retry": "false"}), False, "server_error",
     "api_error"),
    (status_error(400, "invalid_request_error", **{"x-should-retry": "true"}), True,
     "client_error", "invalid_request_error"),
    (anthropic.APIConnectionError(request=REQUEST), True, "connection_error", "api_error"),
    (anthropic.APITimeoutError(request=REQUEST), True, "timeout", "timeout_error"),
    (UnexpectedReply("not a message"), False, "client_error", "api_error"),
])
def test_classify_failure(exc: anthropic.APIError, transient: bool, outcome: str,
                          kind: str) -> None:
    failure = classify_failure(exc)
    assert (failure.transient, failure.outcome, failure.error.type) == (transient, outcome, kind)
    assert failure.error.message


def test_retry_after_is_read_when_the_api_gives_it() -> None:
    assert classify_failure(status_error(429, "rate_limit_error", **{"retry-after": "7"})
                            ).retry_after == 7.0
    assert classify_failure(status_error(429, "rate_limit_error")).retry_after is None
    assert classify_failure(status_error(429, "rate_limit_error", **{"retry-after": "soon"})
                            ).retry_after is None


def accepted(model: str = "claude-sonnet-4-6") -> AcceptedTask:
    return AcceptedTask(tenant="acme", task_id="t-1", attempt=1, metadata={"k": 1},
                        params={"model": model, "max_tokens": 10, "messages": []},
                        published_at=datetime(2026, 11, 27, tzinfo=UTC))


MESSAGE = {"id": "msg_1", "type": "message", "content": [],
           "usage": {"input_tokens": 1_000_000, "output_tokens": 100_000,
                     "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}


def test_a_real_time_result_costs_full_price_and_saves_nothing() -> None:
    prices = default_prices()
    result = realtime_result(accepted(), "succeeded", 2, prices, message=MESSAGE)
    assert (result.route, result.batch_id, result.attempts) == ("realtime", None, 2)
    assert result.metadata == {"k": 1} and result.message == MESSAGE
    assert result.usage is not None and result.usage.input_tokens == 1_000_000
    rates = prices.rates("claude-sonnet-4-6")
    assert rates is not None
    full = float(rates["input"] + rates["output"] / 10)  # 1 MTok in, 0.1 MTok out
    assert result.cost is not None
    assert result.cost.batch_usd == result.cost.realtime_usd == pytest.approx(full)
    assert result.cost.saved_usd == 0


def test_a_real_time_result_without_a_reply_or_a_price_has_no_cost() -> None:
    error = ErrorInfo(type="invalid_request_error", message="bad")
    failed = realtime_result(accepted(), "errored", 1, default_prices(), error=error)
    assert (failed.status, failed.error, failed.usage, failed.cost) == ("errored", error, None, None)
    unpriced = realtime_result(accepted("some-new-model"), "succeeded", 1, default_prices(),
                               message=MESSAGE)
    assert unpriced.usage is not None and unpriced.cost is None


@pytest.mark.parametrize("betas, header", [(["files-api-2025-04-14", "skills-2025-10-02"],
                                            "files-api-2025-04-14,skills-2025-10-02"),
                                           ([], None)])
async def test_a_real_time_call_sends_the_task_betas(betas: list[str], header: str | None) -> None:
    sent: list[httpx2.Request] = []

    def api(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(200, json=MESSAGE)

    client = anthropic.AsyncAnthropic(api_key="k", base_url="http://api.test", http_client=(
        anthropic.DefaultAsyncHttpxClient(transport=httpx2.MockTransport(api))))
    settings = NotifierSettings(anthropic=AnthropicSettings(api_key="k",
                                                            base_url="http://api.test"))
    calls = RealtimeCalls(cast(Any, None), client, cast(Any, None), cast(Any, None), settings,
                          Accounting(NotifierMetrics(CollectorRegistry()), default_prices()))
    params = accepted().params
    assert await calls._call(params, betas) == MESSAGE
    (request,) = sent
    assert (request.url.path, request.headers.get("anthropic-beta")) == ("/v1/messages", header)
    assert json.loads(request.content) == params
    await client.close()
