"""Scripted HTTP faults as the SDK sees them: retries, exception classes, lost responses."""

from __future__ import annotations

import time

import anthropic
import pytest

from batchbus.emulator import EmulatorHandle, FaultRule
from tests.emulator.helpers import error_body, item, make_client, wait_until


def test_429_with_retry_after_ms_is_retried_by_the_sdk(emu: EmulatorHandle) -> None:
    emu.configure(faults=[FaultRule(operation="create", status=429, retry_after_ms=20)])
    with make_client(emu, max_retries=2) as sdk:
        started = time.monotonic()
        batch = sdk.messages.batches.create(requests=[item("a")])
        assert time.monotonic() - started < 0.3, "retry-after-ms beats the SDK's backoff"
    assert batch.processing_status == "in_progress"
    assert emu.state.stats()["calls"]["create"] == 2
    assert [c["batch_id"] for c in emu.state.creates()] == [batch.id]
    assert emu.state.stats()["faults_remaining"] == [0]


@pytest.mark.parametrize(
    ("status", "exception", "error_type"),
    [
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
        (504, anthropic.GatewayTimeoutError, "timeout_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
    ],
)
def test_fault_surfaces_as_the_sdk_exception(
    client: anthropic.Anthropic,
    emu: EmulatorHandle,
    status: int,
    exception: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    batch = client.messages.batches.create(requests=[item("a")])
    emu.configure(faults=[FaultRule(operation="retrieve", status=status)])
    with pytest.raises(exception) as caught:
        client.messages.batches.retrieve(batch.id)
    assert caught.value.status_code == status and caught.value.type == error_type
    assert error_body(caught.value)["request_id"] == caught.value.request_id
    assert client.messages.batches.retrieve(batch.id).id == batch.id, "the rule is spent"


def test_overloaded_body_says_overloaded(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    emu.configure(faults=[FaultRule(operation="*", status=529)])
    with pytest.raises(anthropic.OverloadedError) as caught:
        client.messages.batches.list()
    assert caught.value.api_message == "Overloaded"


def test_spend_limit_429_has_error_code_and_no_retry_after(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    emu.configure(faults=[FaultRule(operation="create", spend_limit=True)])
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.batches.create(requests=[item("a")])
    assert caught.value.status_code == 429
    assert caught.value.error_code == "enforced_spend_limit_reached"
    assert "retry-after" not in caught.value.response.headers
    assert "retry-after-ms" not in caught.value.response.headers


def test_after_create_fault_loses_the_response_but_keeps_the_batch(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    emu.configure(faults=[FaultRule(operation="create", status=500, after_create=True)])
    with pytest.raises(anthropic.InternalServerError):
        client.messages.batches.create(requests=[item("lost")])
    listed = list(client.messages.batches.list())
    assert len(listed) == 1 and listed[0].request_counts.processing == 1
    assert emu.state.creates()[0]["requests"][0]["custom_id"] == "lost"


def test_slow_response_times_out_in_the_sdk(emu: EmulatorHandle) -> None:
    emu.configure(faults=[FaultRule(operation="list", delay_seconds=0.5)])
    with make_client(emu, timeout=0.1) as sdk, pytest.raises(anthropic.APITimeoutError):
        sdk.messages.batches.list()


def test_accepted_create_whose_slow_response_times_out(emu: EmulatorHandle) -> None:
    slow = FaultRule(operation="create", after_create=True, delay_seconds=0.5)
    emu.configure(faults=[slow])
    with make_client(emu, timeout=0.1) as sdk, pytest.raises(anthropic.APITimeoutError):
        sdk.messages.batches.create(requests=[item("a")])
    wait_until(lambda: len(emu.state.creates()) == 1)


def test_x_should_retry_false_stops_sdk_retries(emu: EmulatorHandle) -> None:
    emu.configure(faults=[FaultRule(operation="list", status=503, times=5, should_retry=False)])
    with make_client(emu, max_retries=2) as sdk, pytest.raises(anthropic.ServiceUnavailableError):
        sdk.messages.batches.list()
    assert emu.state.stats()["calls"]["list"] == 1
