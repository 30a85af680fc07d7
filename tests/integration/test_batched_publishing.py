"""Publishes whose acks are awaited together (shared/publishing.py PubAcks), and intake
handling a fetched batch as one unit (services/intake/handlers.py handle_batch)."""

import json
import uuid
from datetime import UTC, datetime

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import Header, PubAck
from nats.js.errors import APIError, NoStreamResponseError

from batchbus.launcher.nats_server import NatsServer
from batchbus.services.intake.handlers import WRONG_LAST_SEQUENCE, TaskIntake
from batchbus.services.intake.metrics import IntakeMetrics
from batchbus.services.intake.routing import BatchHistory, Router
from batchbus.services.intake.settings import IntakeSettings
from batchbus.services.intake.validation import Limits
from batchbus.shared import streams, subjects
from batchbus.shared.cancels import Cancels
from batchbus.shared.models import Result
from batchbus.shared.publishing import PubAcks, Raw, result_message
from batchbus.shared.settings import NatsSettings
from tests.integration.helpers import stored_count, ticket

WAIT = 5.0  # seconds for every ack of a test's publishes


async def test_each_publish_gets_its_own_ack_or_error(nats_server: NatsServer,
                                                      tenant: str) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await streams.ensure_streams(js, NatsSettings(url=nats_server.url))
        acks = PubAcks(js)
        result = Result(task_id="t-1", tenant=tenant, status="succeeded")
        stored = result_message(result, subjects.result_msg_id(tenant, "t-1"))
        taken = Raw(subjects.results(tenant, "t-1"), b"{}", subjects.STREAM_RESULTS,
                    {Header.EXPECTED_LAST_SUBJECT_SEQUENCE: "0"})
        nowhere = Raw(f"nowhere.{tenant}", b"{}", subjects.STREAM_RESULTS, {})
        first = await acks.store([stored])
        outcomes = await acks.wait([await acks.send(m.subject, m.payload, m.stream, m.headers)
                                    for m in (stored, taken, nowhere)], timeout=WAIT)
        assert isinstance(first[0], PubAck) and not first[0].duplicate
        again, refused, unrouted = outcomes
        assert isinstance(again, PubAck) and again.duplicate  # same Nats-Msg-Id
        # The error answers fail their own futures instead of hanging until the timeout.
        assert isinstance(refused, APIError) and refused.err_code in WRONG_LAST_SEQUENCE
        assert isinstance(unrouted, NoStreamResponseError)
        assert await stored_count(nats_server.url, subjects.results(tenant, "t-1")) == 1
    finally:
        await nc.close()


def task_msg(nc: Client, tenant: str, data: bytes, seq: int, delivered: int = 1) -> Msg:
    """A task message as the intake consumer hands it over (its ack goes nowhere)."""
    stamp = int(datetime.now(UTC).timestamp() * 1e9)
    return Msg(nc, subject=subjects.tasks(tenant), data=data,
               reply=f"$JS.ACK.{subjects.STREAM_TASKS}.batch-test.{delivered}.{seq}.{delivered}."
                     f"{stamp}.0")


async def test_a_batch_claims_each_id_once(nats_server: NatsServer, tenant: str) -> None:
    """One fetched batch: a task, its duplicate (another message, same id), the task's own
    redelivery, another task and a malformed one. Each is handled as it would be alone."""
    nc = await nats.connect(nats_server.url)
    try:
        js, settings = nc.jetstream(), NatsSettings(url=nats_server.url)
        await streams.ensure_streams(js, settings)
        metrics = IntakeMetrics()
        intake = TaskIntake(
            js, await streams.task_ids_bucket(js, settings),
            Cancels(await streams.cancels_bucket(js, settings)),
            Limits(allowed_models=None, max_tokens=1000, max_task_bytes=1 << 16), metrics,
            Router(BatchHistory(), IntakeSettings().route_policy()))
        base = 10**9 + uuid.uuid4().int % 10**6
        one, two = json.dumps(ticket(1)).encode(), json.dumps(ticket(2)).encode()
        batch = [task_msg(nc, tenant, one, base), task_msg(nc, tenant, one, base + 1),
                 task_msg(nc, tenant, one, base, delivered=2), task_msg(nc, tenant, two, base + 2),
                 task_msg(nc, tenant, b"{not json", base + 3)]
        answers = await nc.subscribe(f"$JS.ACK.{subjects.STREAM_TASKS}.batch-test.>")
        await intake.handle_batch(batch)
        # Every message acked (an empty +ACK; a failed one would get -NAK).
        assert [(await answers.next_msg(timeout=WAIT)).data for _ in batch] == [b""] * 5

        def count(name: str) -> float | None:
            return metrics.registry.get_sample_value(f"batchbus_{name}_total")

        assert count("tasks_received") == 5
        assert count("tasks_deduplicated") == 1  # the second message; the redelivery passes
        assert count("tasks_accepted") == 3  # the redelivery's handoff is deduplicated
        assert await stored_count(nats_server.url, subjects.accepted(tenant),
                                  subjects.STREAM_INTERNAL) == 2
        assert await stored_count(nats_server.url,
                                  subjects.results(tenant, f"invalid-{base + 3}")) == 1
    finally:
        await nc.close()
