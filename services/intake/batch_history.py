"""Follows the poller's `ended` batch events (BATCHBUS_EVENTS) into intake's BatchHistory."""

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from batchbus.services.intake.routing import BatchHistory
from batchbus.shared import subjects
from batchbus.shared.consumer import ephemeral, fetch, stored
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
            async for msgs in stored(psub, FETCH):
                self._apply(msgs)

    async def follow(self) -> None:
        """A service loop: the events as they are published."""
        async with self._consumer() as psub:
            while True:
                self._apply(await fetch(psub, FETCH, timeout=5.0))

    def _consumer(self) -> AbstractAsyncContextManager[JetStreamContext.PullSubscription]:
        # Nothing to recover but what the stream keeps: from the last event read, or the
        # history's window back from now.
        start = self.last_seq or (self.clock() - self.history.window)
        return ephemeral(self.js, subjects.BATCH_EVENTS, subjects.STREAM_EVENTS, start)

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
