"""shared/consumer.fetch against a real nats-server: the pull protocol of nats-py's fetch,
with delivered messages taken from the subscription's queue directly."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from time import monotonic

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from batchbus.launcher.nats_server import NatsServer
from batchbus.shared import consumer

WAIT = 10.0  # seconds: bound of every wait in these tests


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc: Client = await nats.connect(nats_server.url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def stream(js: JetStreamContext) -> str:
    name = f"FETCH_{uuid.uuid4().hex[:8]}"
    await js.add_stream(name=name, subjects=[f"{name.lower()}.>"])
    return name


async def publish(js: JetStreamContext, name: str, n: int, start: int = 0) -> None:
    acks = [await js.publish_async(f"{name.lower()}.m", str(i).encode())
            for i in range(start, start + n)]
    await asyncio.wait_for(asyncio.gather(*acks), WAIT)


async def test_fetch_takes_what_is_stored_up_to_the_batch(js: JetStreamContext) -> None:
    name = await stream(js)
    await publish(js, name, 25)
    async with consumer.pull(js, f"{name.lower()}.>", "d", name, ConsumerConfig()) as psub:
        first = await consumer.fetch(psub, 10, timeout=WAIT)
        rest = await consumer.fetch(psub, 100, timeout=WAIT)
        assert [m.data for m in first] == [str(i).encode() for i in range(10)]
        assert [m.data for m in rest] == [str(i).encode() for i in range(10, 25)]
        assert await consumer.fetch(psub, 10, timeout=0.3) == []  # nothing left


async def test_a_waiting_fetch_returns_the_first_message_to_arrive(
        js: JetStreamContext) -> None:
    name = await stream(js)
    async with consumer.pull(js, f"{name.lower()}.>", "d", name, ConsumerConfig()) as psub:
        waiting = asyncio.create_task(consumer.fetch(psub, 500, timeout=WAIT))
        # The no-wait probe found nothing once the server holds the waiting request.
        async with asyncio.timeout(WAIT):
            while (await psub.consumer_info()).num_waiting < 1:  # noqa: ASYNC110 - polls server state with a bound
                await asyncio.sleep(0.01)
        await publish(js, name, 1)
        got = await asyncio.wait_for(waiting, WAIT)
        assert [m.data for m in got] == [b"0"]


async def test_every_message_is_fetched_once_while_publishes_race_the_fetches(
        js: JetStreamContext) -> None:
    """Bursts are published while a consumer fetches small batches, so requests that
    wait leave messages behind for later fetches: each comes out exactly once."""
    name = await stream(js)
    total, seen = 3000, []
    async with consumer.pull(js, f"{name.lower()}.>", "d", name,
                             ConsumerConfig(ack_wait=30)) as psub:
        async def publisher() -> None:
            for start in range(0, total, 300):
                await publish(js, name, 300, start)
                await asyncio.sleep(0.01)  # bursts, so that some fetches must wait

        publishing = asyncio.create_task(publisher())
        deadline = monotonic() + 60
        while len(seen) < total and monotonic() < deadline:
            for msg in await consumer.fetch(psub, 64, timeout=0.5):
                seen.append(int(msg.data))
                await msg.ack()
        await publishing
        # An ack is a plain publish: the server may count the last ones a moment later.
        async with asyncio.timeout(WAIT):
            while (info := await psub.consumer_info()).num_ack_pending:  # noqa: ASYNC110 - polls server state with a bound
                await asyncio.sleep(0.01)
    assert sorted(seen) == list(range(total))  # none lost, none twice
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_next_message_reads_a_subscription_in_order_and_stops_on_close(
        nats_server: NatsServer) -> None:
    nc: Client = await nats.connect(nats_server.url)
    subject = f"next.{uuid.uuid4().hex[:8]}"
    sub = await nc.subscribe(subject)
    for i in range(5):
        await nc.publish(subject, str(i).encode())
    got = [await consumer.next_message(sub, WAIT) for _ in range(5)]
    assert [m.data for m in got if m is not None] == [str(i).encode() for i in range(5)]
    assert sub.pending_bytes == 0  # taken as nats-py's next_msg takes them
    assert await consumer.next_message(sub, 0.2) is None  # nothing more within the timeout
    await nc.close()
    with pytest.raises(nats.errors.ConnectionClosedError):
        await consumer.next_message(sub, WAIT)
