"""Publishing of final results and batch events, each with a deterministic Nats-Msg-Id."""

from nats.js import JetStreamContext

from shared import subjects
from shared.models import BatchEvent, Result


async def publish_result(js: JetStreamContext, result: Result, msg_id: str) -> bool:
    """Stores the task's final result; returns False when the stream already had it."""
    ack = await js.publish(
        subjects.results(result.tenant, result.task_id),
        result.model_dump_json().encode(),
        stream=subjects.STREAM_RESULTS,
        headers={subjects.MSG_ID: msg_id},
    )
    return not ack.duplicate


async def publish_event(js: JetStreamContext, event: BatchEvent, detail: str = "") -> None:
    await js.publish(
        subjects.batch_events(event.batch_id),
        event.model_dump_json().encode(),
        stream=subjects.STREAM_EVENTS,
        headers={subjects.MSG_ID: subjects.event_msg_id(event.batch_id, event.event, detail)},
    )
