"""The API key is a secret: a run with a distinctive key through rejected keys (401), API
faults and every kind of outcome leaves it in no log, no /metrics page, no stored message
(tasks, internal, results, events, dead letters, KV buckets, object store) and no error."""

import asyncio
import secrets
import urllib.request
from collections.abc import Iterator
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from batchbus.client import BatchbusClient
from batchbus.emulator.config import EmulatorConfig
from batchbus.emulator.server import EmulatorHandle, start_emulator
from batchbus.launcher.nats_server import NatsServer, start_nats
from batchbus.launcher.services import Pipeline
from batchbus.shared import subjects
from tests.fault.conftest import FAST_RECOVERY
from tests.integration.helpers import gather_results, ticket

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.fault]

# Distinctive enough that a match can only be the key: its random core is searched for too,
# so a truncated or re-quoted key would still be found.
CORE = secrets.token_hex(16)
API_KEY = f"sk-ant-api03-{CORE}-secretscan"
CANARY = f"canary-{secrets.token_hex(8)}"  # planted in a task: proves the scan reads everything


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A server of this module's own, so every stored message comes from this run."""
    server = start_nats(str(tmp_path_factory.mktemp("nats-secrets")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    handle = start_emulator(EmulatorConfig(processing_seconds=0.3, api_keys={API_KEY}))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def pipeline_overrides() -> dict[str, str]:
    return {**FAST_RECOVERY, "ANTHROPIC_API_KEY": API_KEY, "NOTIFIER_MAX_ATTEMPTS": "2"}


def directive(outcome: str) -> dict[str, Any]:
    return {"metadata": {"user_id": f"emulate:{outcome}"}}


WORKLOAD = [
    *(ticket(i) for i in range(6)),
    ticket(10, **directive("errored:overloaded_error:first=1")),  # retried, then succeeds
    ticket(11, **directive("errored:invalid_request_error")),  # permanent
    ticket(12, **directive("errored:api_error")),  # dead letter after 2 attempts
    ticket(13, **directive("expired:first=1")),
    ticket(14, **directive("canceled")),
    {**ticket(15), "metadata": {"note": CANARY}},
]
MALFORMED = [b"{not json", b'{"task_id": "no-params"}']
FAULTS = [
    {"operation": "create", "status": 500, "after_create": True, "times": 1},  # adopted
    {"operation": "create", "status": 429, "retry_after_ms": 50, "times": 2},
    {"operation": "retrieve", "status": 500, "times": 2},
    {"operation": "results", "status": 529, "times": 1},
]


async def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)  # poll interval


async def stored_messages(js: JetStreamContext) -> tuple[set[str], list[bytes]]:
    """The streams of the account, and subject, headers and body of their every message."""
    found: list[bytes] = []
    names: set[str] = set()
    for info in await js.streams_info():
        name = info.config.name
        assert name is not None
        names.add(name)
        for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
            try:
                msg = await js.get_msg(name, seq)
            except NotFoundError:  # deleted or purged
                continue
            found.append(f"{msg.subject} {msg.headers}".encode() + b" " + (msg.data or b""))
    return names, found


def page(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


def leaks(text: bytes) -> bool:
    return API_KEY.encode() in text or CORE.encode() in text


async def test_the_api_key_appears_nowhere(pipeline: Pipeline, emulator: EmulatorHandle,
                                           nats_server: NatsServer) -> None:
    # First every call is refused (401: the API no longer takes our key), then faults.
    emulator.configure(api_keys={"sk-ant-someone-else"})
    async with BatchbusClient(nats_server.url, "acme") as client:
        await client.publish_many(WORKLOAD)
        for body in MALFORMED:
            await client.publish(body)
        await client.cancel("never-sent")
        await wait_for(lambda: emulator.state.stats()["calls"]["create"] >= 2, 30,
                       "creates refused with 401")
        emulator.configure(api_keys={API_KEY}, faults=FAULTS)
        results = await gather_results(client, len(WORKLOAD) + len(MALFORMED), timeout=90)
    assert emulator.state.stats()["faults_remaining"] == [0] * len(FAULTS)
    statuses = sorted(r[0].status for r in results.values())
    assert set(statuses) == {"succeeded", "errored", "canceled", "rejected"}

    pages = [await asyncio.to_thread(page, f"http://127.0.0.1:{s.port}{path}")
             for s in pipeline.services.values() for path in ("/metrics", "/healthz")]
    logs = {name: s.log_path.read_bytes() for name, s in pipeline.services.items()}
    nc = await nats.connect(nats_server.url)
    try:
        streams, stored = await stored_messages(nc.jetstream())
    finally:
        await nc.close()

    # The scan reads what it should: the canary task is stored, the 401s and faults are logged.
    assert any(CANARY.encode() in m for m in stored)
    assert {subjects.STREAM_TASKS, subjects.STREAM_INTERNAL, subjects.STREAM_RESULTS,
            subjects.STREAM_EVENTS, subjects.STREAM_DEAD_LETTERS, f"KV_{subjects.KV_BATCHES}",
            f"KV_{subjects.KV_TASK_IDS}", f"OBJ_{subjects.OBJ_MANIFESTS}"} <= streams
    assert all(b"batchbus_" in page for page in pages[::2])
    assert b"401" in logs["batcher"] or b"authentication" in logs["batcher"].lower()
    assert [name for name, log in logs.items() if leaks(log)] == []
    assert not any(leaks(page) for page in pages)
    assert [m[:120] for m in stored if leaks(m)] == []
    errors = [r[0].error.message for r in results.values() if r[0].error is not None]
    assert errors and not any(leaks(e.encode()) for e in errors)
