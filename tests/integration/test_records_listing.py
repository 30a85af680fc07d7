"""Listing batch records reads a retired record's delete marker once, not on every listing,
and reads every key again after the server restarts (the only way a deletion can be lost)."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from batchbus.launcher.nats_server import NatsServer, start_nats
from batchbus.shared import streams
from batchbus.shared.models import BatchRecord
from batchbus.shared.records import (
    KV_STREAM,
    KV_SUBJECTS,
    MANIFESTS_STREAM,
    BatchRecords,
)
from batchbus.shared.settings import NatsSettings

pytestmark = pytest.mark.nats


@pytest.fixture
def own_server(tmp_path: Path) -> NatsServer:  # restarted by the test: not the shared one
    server = start_nats(str(tmp_path / "nats"))
    yield server  # type: ignore[misc]
    server.stop()


RECONNECTED = asyncio.Event()


@pytest.fixture
async def client(own_server: NatsServer) -> AsyncIterator[Client]:
    async def reconnected() -> None:
        RECONNECTED.set()

    nc = await nats.connect(own_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                            reconnected_cb=reconnected)
    yield nc
    await nc.close()


def record() -> BatchRecord:
    return BatchRecord(intent_id=uuid.uuid4().hex, state="submitted", requests=1, bytes=10,
                       intent_at=datetime.now(UTC))


async def write(records: BatchRecords, r: BatchRecord) -> None:
    await records.kv.create(r.intent_id, r.model_dump_json().encode())


async def test_retired_records_are_read_once_and_again_after_a_restart(
        own_server: NatsServer, client: Client) -> None:
    js = client.jetstream()
    records = await streams.batch_records(js, NatsSettings(url=own_server.url))
    live, retired = record(), record()
    await write(records, live)
    await write(records, retired)
    await records.kv.delete(retired.intent_id)

    assert [r.intent_id for r in await records.all()] == [live.intent_id]
    assert records._gone == {retired.intent_id}
    # Written again behind the listing's back, as a server that lost the deletion would have
    # it: not seen while the connection stands...
    await records.kv.put(retired.intent_id, retired.model_dump_json().encode())
    assert [r.intent_id for r in await records.all()] == [live.intent_id]
    # ...and seen once the server has restarted, which is the only way to lose a deletion.
    RECONNECTED.clear()
    own_server.restart()
    await asyncio.wait_for(RECONNECTED.wait(), 30)  # nats-py reconnects on its own
    listed = {r.intent_id for r in await records.all()}
    assert listed == {live.intent_id, retired.intent_id}
    assert records._gone == set()


async def test_a_listing_sees_every_write_of_another_replica(own_server: NatsServer,
                                                            client: Client) -> None:
    js = client.jetstream()
    mine = await streams.batch_records(js, NatsSettings(url=own_server.url))
    other = BatchRecords(js, mine.kv, mine.manifests)  # another replica's view of the bucket
    first, second = record(), record()
    await write(mine, first)
    assert [r.intent_id for r in await mine.all()] == [first.intent_id]
    assert [r.intent_id for r in await mine.all()] == [first.intent_id]  # unchanged: cached
    await write(other, second)
    assert {r.intent_id for r in await mine.all()} == {first.intent_id, second.intent_id}
    await other.transition(second.intent_id, lambda r: r.model_copy(update={"requests": 7}))
    changed = {r.intent_id: r.requests for r in await mine.all()}
    assert changed == {first.intent_id: 1, second.intent_id: 7}
    await other.kv.delete(first.intent_id)
    assert [r.intent_id for r in await mine.all()] == [second.intent_id]


async def test_a_retired_records_marker_expires(own_server: NatsServer, client: Client) -> None:
    """Retiring leaves a marker the server removes after its TTL: the bucket's subjects do not
    grow with every batch ever retired."""
    js = client.jetstream()
    made = await streams.batch_records(js, NatsSettings(url=own_server.url))
    # The bucket nats-py made allows message TTLs: the setting applies.
    assert made.marker_ttl == NatsSettings().retired_marker_ttl_seconds
    records = BatchRecords(js, made.kv, made.manifests, marker_ttl=1.0)
    live, retired = record(), record()
    for r in (live, retired):
        await records.create(r, [b'["row"]'])
    await records.settle(retired.intent_id,
                         lambda r: r.model_copy(update={"state": "delivered", "acked": True}))
    assert await records.read(retired.intent_id) is None
    assert [r.intent_id for r in await records.all()] == [live.intent_id]
    # Its manifest went whole, the marker nats-py's delete leaves included.
    manifests = await js.stream_info(MANIFESTS_STREAM, subjects_filter="$O.>")
    assert len(manifests.state.subjects or {}) == 2  # the live one's meta and its chunk
    assert await subjects_of(js) == {live.intent_id, retired.intent_id}  # the marker, for now
    for _ in range(100):  # the server expires it within a second or two
        if await subjects_of(js) == {live.intent_id}:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"the retired record's marker is still there: {await subjects_of(js)}")
    newer = record()
    await records.create(newer, [b'["row"]'])  # the next listing that reads the bucket...
    assert {r.intent_id for r in await records.all()} == {live.intent_id, newer.intent_id}
    assert records._gone == set()  # ...forgets the key with its marker


async def subjects_of(js: JetStreamContext) -> set[str]:
    info = await js.stream_info(KV_STREAM, subjects_filter=KV_SUBJECTS + ">")
    return {s.removeprefix(KV_SUBJECTS) for s in info.state.subjects or {}}
