"""Every JetStream publish batchbus makes, each with a deterministic Nats-Msg-Id."""

import asyncio

from nats.js import JetStreamContext
from nats.js.api import PubAck
from pydantic import BaseModel

from shared import subjects
from shared.models import AcceptedTask, BatchEvent, Result

ACK_TIMEOUT = 10.0  # seconds; publish_async's future has no timeout of its own


async def publish(js: JetStreamContext, subject: str, body: BaseModel, stream: str,
                  msg_id: str, headers: dict[str, str] | None = None) -> PubAck:
    """Stores `body` and waits for the stream's acknowledgement.

    publish_async costs a fraction of the CPU of `js.publish` (no inbox per request), and
    concurrent callers share round trips.
    """
    future = await js.publish_async(subject, body.model_dump_json().encode(), stream=stream,
                                    headers={**(headers or {}), subjects.MSG_ID: msg_id})
    return await asyncio.wait_for(future, ACK_TIMEOUT)


async def publish_result(js: JetStreamContext, result: Result, msg_id: str,
                         webhook: str | None = None) -> bool:
    """Stores the task's final result; returns False when the stream already had it.

    `webhook` names the tenant's endpoint the notifier then POSTs the stored result to.
    """
    ack = await publish(js, subjects.results(result.tenant, result.task_id), result,
                        subjects.STREAM_RESULTS, msg_id,
                        {subjects.WEBHOOK_HEADER: webhook} if webhook else None)
    return not ack.duplicate


async def publish_accepted(js: JetStreamContext, task: AcceptedTask) -> None:
    """Hands a task attempt to the batcher (from intake, or as a retry from the notifier)."""
    await publish(js, subjects.accepted(task.tenant), task, subjects.STREAM_INTERNAL,
                  subjects.accepted_msg_id(task.tenant, task.task_id, task.attempt))


async def publish_realtime(js: JetStreamContext, task: AcceptedTask) -> None:
    """Hands a task to the notifier's real-time worker (from intake)."""
    await publish(js, subjects.realtime(task.tenant), task, subjects.STREAM_INTERNAL,
                  subjects.realtime_msg_id(task.tenant, task.task_id))


async def publish_event(js: JetStreamContext, event: BatchEvent, detail: str = "") -> None:
    await publish(js, subjects.batch_events(event.batch_id), event, subjects.STREAM_EVENTS,
                  subjects.event_msg_id(event.batch_id, event.event, detail))
