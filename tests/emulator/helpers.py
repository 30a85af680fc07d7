"""Helpers for the emulator tests: SDK clients, request builders, admin calls, bounded waits."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, cast

import anthropic
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from anthropic.types.messages.batch_create_params import Request

from batchbus.emulator import EmulatorHandle

API_KEY = "test-key"
MODEL = "claude-haiku-4-5"


def make_client(emu: EmulatorHandle, **kwargs: Any) -> anthropic.Anthropic:
    options: dict[str, Any] = {"api_key": API_KEY, "max_retries": 0}
    options.update(kwargs)
    return anthropic.Anthropic(base_url=emu.url, _strict_response_validation=True, **options)


def make_async_client(emu: EmulatorHandle, **kwargs: Any) -> anthropic.AsyncAnthropic:
    options: dict[str, Any] = {"api_key": API_KEY, "max_retries": 0}
    options.update(kwargs)
    return anthropic.AsyncAnthropic(base_url=emu.url, _strict_response_validation=True, **options)


def params(text: str = "hello", **extra: Any) -> MessageCreateParamsNonStreaming:
    """Messages params, valid unless `extra` (added or overriding fields) breaks them."""
    base: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": text}],
    }
    base.update(extra)
    return cast(MessageCreateParamsNonStreaming, base)


def item(custom_id: str, **extra: Any) -> Request:
    """A batch request whose params text derives from the custom_id."""
    return {"custom_id": custom_id, "params": params(f"text of {custom_id}", **extra)}


def error_body(error: anthropic.APIStatusError) -> dict[str, Any]:
    assert isinstance(error.body, dict)
    return error.body


def results_by_id(sdk: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {line.custom_id: line.result for line in sdk.messages.batches.results(batch_id)}


def run_batch(client: anthropic.Anthropic, emu: EmulatorHandle,
              requests: list[Request]) -> dict[str, Any]:
    """Create, let it end, return results keyed by custom_id."""
    batch = client.messages.batches.create(requests=requests)
    emu.advance(2)
    return results_by_id(client, batch.id)


def admin(target: EmulatorHandle | str, method: str, path: str, body: Any = None) -> Any:
    """Call an admin endpoint over HTTP (admin needs no auth); target is a handle or base URL."""
    base = target if isinstance(target, str) else target.url
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}{path}", data=data, method=method)
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:  # close the response it carries (else: ResourceWarning)
            raise AdminError(exc.code, exc.read().decode()) from None


class AdminError(Exception):
    """An admin endpoint answered with an error status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `condition` until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)
