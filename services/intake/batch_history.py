"""Follows the poller's `ended` batch events (BATCHBUS_EVENTS) into intake's BatchHistory."""

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from batchbus.services.intake.routing import BatchHistory
from batchbus.shared import subjects
from batchbus.shared.consumer import fetch
from batchbus.shared.models import BatchEvent

log = logging.getLogger("batchbus.intake")

FETCH = 256


class BatchHistoryFollower:
    def __init__(self, js: JetStreamContext, history: BatchHistory,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.js = js
        self.history = history
        self.clock = clock
        self.last_seq = 0  # the last event read; a restarted loop goes on from there

    async def load(self) -> None:
        """Reads the events stored now, so the first decisions already have the history."""
        async with self._consumer() as psub:
            remaining = (await psub.consumer_info()).num_pending or 0
            while remaining > 0:
                msgs = await fetch(psub, min(FETCH, remaining), timeout=5.0)
                if not msgs:
                    return  # events aged out of the stream meanwhile
                self._apply(msgs)
                remaining -= len(msgs)

    async def follow(self) -> None:
        """A service loop: the events as they are published."""
        async with self._consumer() as psub:
            while True:
                self._apply(await fetch(psub, FETCH, timeout=5.0))

    @contextlib.asynccontextmanager
    async def _consumer(self) -> AsyncIterator[JetStreamContext.PullSubscription]:
        # Ephemeral and unacknowledged: nothing to recover but what the stream keeps.
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, mem_storage=True, num_replicas=1,
                                inactive_threshold=60.0)
        if self.last_seq:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = self.last_seq + 1
        else:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = self.clock() - self.history.window
        psub = await self.js.pull_subscribe(subjects.BATCH_EVENTS, stream=subjects.STREAM_EVENTS,
                                            config=config)
        try:
            yield psub
        finally:
            with contextlib.suppress(nats.errors.Error):
                await psub.unsubscribe()

    def _apply(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            self.last_seq = max(self.last_seq, msg.metadata.sequence.stream)
            try:
                event = BatchEvent.model_validate_json(msg.data)
            except ValidationError:
                log.warning("unreadable batch event at seq %s", msg.metadata.sequence.stream)
                continue
            if event.event == "ended" and event.created_at and event.ended_at:
                self.history.add(event.batch_id, event.created_at, event.ended_at)
