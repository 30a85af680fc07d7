"""Payloads the size batchbus stores out of band: 300K-token answers (the output-300k beta),
20 MB base64 documents, and create bodies that arrive in pieces or reach the size limit."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import anthropic
import pytest
from anthropic.types.messages.batch_create_params import Request

from batchbus.emulator import EmulatorConfig, EmulatorHandle
from batchbus.emulator.prompt import IMAGE_MAX_TOKENS, binary_tokens, params_hash
from batchbus.emulator.results import CHUNK_BYTES
from tests.emulator.helpers import API_KEY, MODEL, item, params, results_by_id

OUTPUT_300K = "output-300k-2026-03-24"
BIG_MODEL = "claude-opus-5-5"  # one of the beta's models
# "%PDF-1" then padding: 20 MiB of base64, 15 MiB of "PDF"; nothing decodes it.
PDF = "JVBERi0x" + "A" * (20 * 1024 * 1024 - 8)


def answer(custom_id: str, output_tokens: int, max_tokens: int = 300_000) -> Request:
    directive = f"emulate:succeeded:output_tokens={output_tokens}"
    return item(custom_id, model=BIG_MODEL, max_tokens=max_tokens, metadata={"user_id": directive})


def beta_results(client: anthropic.Anthropic, emu: EmulatorHandle, requests: list[Request]) -> str:
    """Creates a batch under the output-300k beta and lets it end; returns its id."""
    batch = client.beta.messages.batches.create(requests=requests, betas=[OUTPUT_300K])
    emu.advance(2)
    return batch.id


def test_a_300k_token_answer(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    requests = [answer("full", 300_000), answer("capped", 300_000, max_tokens=200_000)]
    batch_id = beta_results(client, emu, requests)
    body = client.messages.batches.with_raw_response.results(batch_id).http_response.read()
    lines = {json.loads(line)["custom_id"]: line for line in body.splitlines()}
    assert len(lines["full"]) > 1_200_000  # over NATS's default max_payload of 1 MB
    results = results_by_id(client, batch_id)  # the SDK's strict models accept it
    full, capped = results["full"].message, results["capped"].message
    assert (full.usage.output_tokens, full.stop_reason) == (300_000, "end_turn")
    assert len(full.content[0].text) == 4 * 300_000
    assert (capped.usage.output_tokens, capped.stop_reason) == (200_000, "max_tokens")
    assert len(capped.content[0].text) == 4 * 200_000


def test_output_tokens_on_the_messages_api(client: anthropic.Anthropic) -> None:
    directive = {"user_id": "emulate:succeeded:output_tokens=5000"}
    message = client.messages.create(**params(max_tokens=1_000, metadata=directive))
    assert (message.usage.output_tokens, message.stop_reason) == (1_000, "max_tokens")
    assert message.content[0].type == "text" and len(message.content[0].text) == 4_000


def test_results_stream_in_bounded_chunks(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    """A chunk ends past CHUNK_BYTES, so big answers are never held 500 at a time."""
    requests = [answer(f"a{n}", 100_000) for n in range(6)] + [item(f"s{n}") for n in range(50)]
    batch_id = beta_results(client, emu, requests)
    chunks = list(emu.state.results(batch_id))
    longest = max(len(line) for chunk in chunks for line in chunk.splitlines(keepends=True))
    assert len(chunks) > 1 and all(len(chunk) < CHUNK_BYTES + longest for chunk in chunks)
    downloaded = client.messages.batches.with_raw_response.results(batch_id).http_response.read()
    assert downloaded == b"".join(chunks)


def document(data: str, cached: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": data},
    }
    if cached:
        block["cache_control"] = {"type": "ephemeral"}
    return block


def with_content(*blocks: dict[str, Any]) -> dict[str, Any]:
    content = [*blocks, {"type": "text", "text": "Summarise this."}]
    return {"messages": [{"role": "user", "content": content}]}


def test_a_20_mb_document_counts_by_its_size(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    """About 64 bytes of PDF a token (15 MiB: 245,760), not 4 characters of base64 (5M)."""
    expected = binary_tokens(PDF, "application/pdf")
    assert expected == 245_760
    requests = [item("pdf", **with_content(document(PDF))),
                item("cached", **with_content(document(PDF, cached=True)))]
    batch = client.messages.batches.create(requests=requests)
    # What the batch keeps until its results are read: no documents.
    assert emu.state.store.get(batch.id).params == [{"model": MODEL, "max_tokens": 256}] * 2
    emu.advance(2)
    lines = results_by_id(client, batch.id)
    tokens = lines["pdf"].message.usage.input_tokens
    assert expected < tokens < expected + 100
    cached = lines["cached"].message.usage  # the cached prefix counts the document alike
    assert expected < cached.cache_creation_input_tokens < expected + 100
    message = client.messages.create(**params(**with_content(document(PDF))))
    assert message.usage.input_tokens == tokens


def test_an_image_counts_at_most_the_tokens_of_a_scaled_down_image(
    client: anthropic.Anthropic,
) -> None:
    def image(data: str) -> dict[str, Any]:
        return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}

    large = client.messages.create(**params(**with_content(image("iVBORw0K" + "A" * 4_000_000))))
    small = client.messages.create(**params(**with_content(image("iVBORw0KGgo="))))
    assert IMAGE_MAX_TOKENS < large.usage.input_tokens < IMAGE_MAX_TOKENS + 100
    assert small.usage.input_tokens < 100


def create_body(text: str) -> tuple[bytes, Request]:
    """A one-request create body (UTF-8, non-ASCII kept as is) and its request."""
    request = item("only", **params(text))
    return json.dumps({"requests": [request]}, ensure_ascii=False).encode(), request


def post_in_pieces(emu: EmulatorHandle, pieces: list[bytes], chunked: bool) -> tuple[int, Any]:
    """POST a create whose body goes out piece by piece: with Content-Length, or chunked."""
    address = urlsplit(emu.url)
    headers = {"x-api-key": API_KEY, "content-type": "application/json"}
    if not chunked:
        headers["content-length"] = str(sum(len(piece) for piece in pieces))
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
    try:
        connection.request("POST", "/v1/messages/batches", body=iter(pieces), headers=headers,
                           encode_chunked=chunked)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_sent_in_pieces(emu: EmulatorHandle, chunked: bool) -> None:
    """3 MB in pieces of odd sizes, cut inside multi-byte characters: one body, intact."""
    body, request = create_body("é✓ " * 500_000)
    pieces = [body[start : start + 1_000_003] for start in range(0, len(body), 1_000_003)]
    status, batch = post_in_pieces(emu, pieces, chunked)
    assert status == 200 and batch["request_counts"]["processing"] == 1
    (created,) = emu.state.creates()
    assert created["body_bytes"] == len(body)
    assert created["requests"][0]["params_hash"] == params_hash(dict(request["params"]))


def test_the_size_limit_is_inclusive(emu: EmulatorHandle) -> None:
    """256 MiB by default (§6); a body of exactly the limit is accepted, one byte more is
    Cloudflare's 413, even when it arrives in pieces."""
    assert EmulatorConfig().max_body_bytes == 256 * 1024 * 1024
    body, _ = create_body("x" * 100_000)
    pieces = [body[:50_000], body[50_000:]]
    emu.configure(max_body_bytes=len(body))
    assert post_in_pieces(emu, pieces, chunked=False)[0] == 200
    emu.configure(max_body_bytes=len(body) - 1)
    status, error = post_in_pieces(emu, pieces, chunked=False)
    assert status == 413
    assert error == {"error": {"type": "request_too_large", "message": "Request exceeds the maximum size"}}
    assert len(emu.state.creates()) == 1
