"""Authentication (Bearer or x-api-key), anthropic-version, and the request-id header."""

from __future__ import annotations

import anthropic
import pytest

from batchbus.emulator import EmulatorHandle
from tests.emulator.helpers import error_body, make_client


def test_sdk_bearer_key_is_accepted(emu: EmulatorHandle) -> None:
    emu.configure(api_keys={"good"})
    with make_client(emu, api_key="good") as sdk:
        raw = sdk.messages.batches.with_raw_response.list()
    assert raw.http_request.headers["authorization"] == "Bearer good"
    assert raw.parse().data == []


def test_x_api_key_header_is_accepted(emu: EmulatorHandle) -> None:
    emu.configure(api_keys={"good"})
    headers = {"x-api-key": "good", "Authorization": anthropic.Omit()}
    with make_client(emu, api_key="ignored", default_headers=headers) as sdk:
        raw = sdk.messages.batches.with_raw_response.list()
    assert "authorization" not in raw.http_request.headers
    assert raw.parse().data == []


def test_wrong_key_is_401(emu: EmulatorHandle) -> None:
    emu.configure(api_keys={"good"})
    with make_client(emu, api_key="bad") as sdk:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            sdk.messages.batches.list()
    body = error_body(caught.value)
    assert caught.value.status_code == 401
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["error"]["message"] == "API key is invalid."
    assert body["request_id"] == caught.value.request_id


def test_missing_key_is_401_even_when_any_key_is_accepted(emu: EmulatorHandle) -> None:
    headers = {"Authorization": anthropic.Omit()}
    with make_client(emu, default_headers=headers) as sdk:
        with pytest.raises(anthropic.AuthenticationError, match="x-api-key header is required"):
            sdk.messages.batches.list()


@pytest.mark.parametrize("version", ["2023-06-01", "2026-10-21"])
def test_known_api_versions_are_accepted(emu: EmulatorHandle, version: str) -> None:
    headers = {"anthropic-version": version, "anthropic-beta": "whatever-2099-01-01"}
    with make_client(emu, default_headers=headers) as sdk:
        raw = sdk.messages.batches.with_raw_response.list()
    assert raw.http_request.headers["anthropic-version"] == version
    assert raw.parse().data == []


def test_unknown_api_version_is_400(emu: EmulatorHandle) -> None:
    headers = {"anthropic-version": "1999-01-01"}
    with make_client(emu, default_headers=headers) as sdk, pytest.raises(anthropic.BadRequestError):
        sdk.messages.batches.list()


def test_unknown_path_is_a_json_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.get("/v1/nothing-here", cast_to=object)
    assert caught.value.type == "not_found_error"
