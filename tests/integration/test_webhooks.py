"""Webhooks: each final result is POSTed, signed, to the endpoint its task named; a failing
endpoint is retried without holding up the NATS result, and its failure is recorded."""

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import nats
import pytest

from batchbus.client import BatchbusClient
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from batchbus.shared import subjects
from batchbus.shared.models import Result
from batchbus.shared.webhooks import (
    ATTEMPT_HEADER,
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    WebhookFailure,
    verify_signature,
)
from tests.integration.helpers import gather_results, metric_total, stored_count, ticket

pytestmark = pytest.mark.nats

MAX_ATTEMPTS = 3
SECRETS = {"flaky": "whsec_" + uuid.uuid4().hex, "down": "whsec_" + uuid.uuid4().hex}
# One tenant per test (the endpoints are configured before the services start).
FLAKY, UNKNOWN, DOWN = ("wh" + uuid.uuid4().hex[:10] for _ in range(3))
WAIT = 60.0  # bound on every wait; the deliveries themselves take a few seconds


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    received_at: float


class Receiver:
    """A tenant's HTTP endpoints on loopback: /flaky answers 500 to the first two deliveries of
    each result, then 204; /down always answers 500, and holds its first request until the
    test lets it go."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.down_held = threading.Event()
        self.release_down = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received_at = time.time()
                status = receiver.answer(self.path, self.headers.get(DELIVERY_HEADER, ""))
                with receiver.lock:
                    receiver.requests.append(Request(self.path, dict(self.headers.items()), body,
                                                     status, received_at))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, delivery_id: str) -> int:
        with self.lock:
            earlier = sum(r.headers.get(DELIVERY_HEADER) == delivery_id for r in self.requests)
        if path == "/flaky":
            return 500 if earlier < 2 else 204
        if not self.down_held.is_set():
            self.down_held.set()
            self.release_down.wait(WAIT)
        return 500

    def of(self, tenant: str, task_id: str | None = None) -> list[Request]:
        """The requests for the tenant's results (of one task)."""
        with self.lock:
            bodies = [(r, json.loads(r.body)) for r in self.requests]
        return [r for r, body in bodies
                if body["tenant"] == tenant and task_id in (None, body["task_id"])]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    handle = Receiver()
    thread = threading.Thread(target=handle.server.serve_forever, daemon=True)
    thread.start()
    yield handle
    handle.release_down.set()
    handle.server.shutdown()
    handle.server.server_close()
    thread.join(10)


@pytest.fixture(scope="module")
def pipeline_overrides(receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    endpoints = {name: {"url": f"{receiver.url}/{name}", "secret": secret}
                 for name, secret in SECRETS.items()}
    config = tmp_path_factory.mktemp("webhooks") / "webhooks.json"
    config.write_text(json.dumps({tenant: endpoints for tenant in (FLAKY, UNKNOWN, DOWN)}))
    return {"WEBHOOKS_FILE": str(config),
            "NOTIFIER_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "NOTIFIER_WEBHOOK_RETRY_DELAY_SECONDS": "0.2",
            "NOTIFIER_WEBHOOK_TIMEOUT_SECONDS": str(WAIT)}


async def until(condition: Any, what: str) -> None:
    """Polls `condition()` until it holds, within WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def counted(pipeline: Pipeline, service: str, counter: str, label: str) -> float:
    """A batchbus_<counter>_total series with one label value, from a service's /metrics."""
    key = "outcome" if counter == "webhook_deliveries" else "reason"
    return metric_total(pipeline.services[service].metrics_url,
                        f'batchbus_{counter}_total{{{key}="{label}"}}')


def accepted(requests: list[Request]) -> list[Request]:
    return [r for r in requests if 200 <= r.status < 300]


async def test_each_result_reaches_its_endpoint_once_signed_after_two_failures(
        pipeline: Pipeline, nats_server: NatsServer, receiver: Receiver) -> None:
    named = [{**ticket(i), "webhook": "flaky"} for i in (1, 2, 3)]
    too_big = {**ticket(4, max_tokens=10**9), "webhook": "flaky"}  # rejected: still told
    async with BatchbusClient(nats_server.url, FLAKY) as client:
        await client.publish_many([*named, too_big, ticket(5)])
        results = await gather_results(client, 5)
    assert results["ticket-00004"][0].status == "rejected"
    wanted = {f"ticket-0000{i}" for i in (1, 2, 3, 4)}
    await until(lambda: all(accepted(receiver.of(FLAKY, t)) for t in wanted), "four deliveries")

    for task_id in wanted:
        (stored,) = results[task_id]
        requests = receiver.of(FLAKY, task_id)
        assert [r.status for r in requests] == [500, 500, 204]
        assert [r.headers[ATTEMPT_HEADER] for r in requests] == ["1", "2", "3"]
        assert len({r.headers[DELIVERY_HEADER] for r in requests}) == 1  # one id to dedup by
        for request in requests:
            assert request.path == "/flaky"
            assert request.headers["Content-Type"] == "application/json"
            assert Result.model_validate_json(request.body) == stored
            # Signed when sent: fresh by the receiver's clock, and only with this secret.
            assert verify_signature(SECRETS["flaky"], request.headers[SIGNATURE_HEADER],
                                    request.body, now=request.received_at)
            assert not verify_signature(SECRETS["down"], request.headers[SIGNATURE_HEADER],
                                        request.body, now=request.received_at)
    assert receiver.of(FLAKY, "ticket-00005") == []  # it named no endpoint
    await until(lambda: counted(pipeline, "notifier", "webhook_deliveries", "delivered") >= 4,
                "the deliveries counted")


async def test_a_task_naming_an_endpoint_its_tenant_lacks_is_rejected(
        pipeline: Pipeline, nats_server: NatsServer, receiver: Receiver, tenant: str) -> None:
    async with BatchbusClient(nats_server.url, UNKNOWN) as client:
        await client.publish({**ticket(1), "webhook": "nope"})
        await client.publish({**ticket(2), "webhook": "http://169.254.169.254/latest"})
        results = await gather_results(client, 2)
    async with BatchbusClient(nats_server.url, tenant) as client:  # configured for others only
        await client.publish({**ticket(3), "webhook": "flaky"})
        (other,) = (await gather_results(client, 1))["ticket-00003"]
    for (result,), name in [(results["ticket-00001"], "nope"),
                            (results["ticket-00002"], "http://169.254.169.254/latest"),
                            ([other], "flaky")]:
        assert result.status == "rejected" and result.error is not None
        assert f"webhook {name!r} is not configured" in result.error.message
    assert receiver.of(UNKNOWN) == [] and receiver.of(tenant) == []
    await until(lambda: counted(pipeline, "intake", "tasks_rejected", "unknown_webhook") >= 3,
                "the rejections counted")


async def test_a_dead_endpoint_never_delays_the_result_and_its_failure_is_recorded(
        pipeline: Pipeline, nats_server: NatsServer, receiver: Receiver) -> None:
    async with BatchbusClient(nats_server.url, DOWN) as client:
        await client.publish({**ticket(1), "webhook": "down"})
        # The first POST is held open; the result is already in NATS meanwhile.
        assert await asyncio.to_thread(receiver.down_held.wait, WAIT), "no delivery came"
        (stored,) = (await gather_results(client, 1))["ticket-00001"]
        assert stored.status == "succeeded"
        assert receiver.of(DOWN) == []  # the held POST has not been answered yet
    receiver.release_down.set()

    subject = subjects.webhook_failures(DOWN)
    nc = await nats.connect(nats_server.url)
    try:
        sub = await nc.jetstream().subscribe(subject, ordered_consumer=True)
        msg = await sub.next_msg(timeout=WAIT)
    finally:
        await nc.close()
    failure = WebhookFailure.model_validate_json(msg.data)
    assert (failure.tenant, failure.task_id, failure.webhook) == (DOWN, "ticket-00001", "down")
    assert (failure.attempts, failure.error) == (MAX_ATTEMPTS, "HTTP 500")
    assert failure.result == stored
    assert SECRETS["down"] not in msg.data.decode() and receiver.url not in msg.data.decode()
    requests = receiver.of(DOWN)
    assert [r.status for r in requests] == [500] * MAX_ATTEMPTS
    assert {r.headers[DELIVERY_HEADER] for r in requests} == {failure.delivery_id}
    assert await stored_count(nats_server.url, subject, subjects.STREAM_DEAD_LETTERS) == 1
    await until(lambda: counted(pipeline, "notifier", "webhook_deliveries", "failed") >= 1,
                "the failure counted")
