"""A small Python client: publish tasks durably and read a tenant's final results."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy

from shared import subjects
from shared.models import Result, Task


class BatchbusClient:
    """`async with BatchbusClient(url, tenant) as c: await c.publish(task)`."""

    def __init__(self, nats_url: str, tenant: str) -> None:
        if not subjects.is_token(tenant):
            raise ValueError(f"tenant must match {subjects.TOKEN_PATTERN}")
        self.nats_url = nats_url
        self.tenant = tenant
        self._nc: Client | None = None

    async def __aenter__(self) -> "BatchbusClient":
        self._nc = await nats.connect(self.nats_url.split(","), name=f"client-{self.tenant}")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._nc is not None:
            await self._nc.drain()

    @property
    def nc(self) -> Client:
        assert self._nc is not None, "use `async with`"
        return self._nc

    async def publish(self, task: Task | dict[str, Any] | bytes) -> None:
        """Returns once JetStream has stored the task (its PubAck)."""
        if isinstance(task, Task):
            data = task.model_dump_json(exclude_defaults=True).encode()
        elif isinstance(task, dict):
            data = Task.model_validate(task).model_dump_json(exclude_defaults=True).encode()
        else:
            data = task
        await self.nc.jetstream().publish(subjects.tasks(self.tenant), data,
                                          stream=subjects.STREAM_TASKS)

    async def cancel(self, task_id: str) -> None:
        """Asks batchbus to cancel a task that has not ended; its result becomes `canceled`."""
        await self.nc.jetstream().publish(subjects.cancel(self.tenant),
                                          json.dumps({"task_id": task_id}).encode(),
                                          stream=subjects.STREAM_CANCELS)

    async def publish_many(self, tasks: Iterable[Task | dict[str, Any]],
                           window: int = 256) -> int:
        """Publishes with up to `window` PubAcks outstanding; returns the count."""
        pending: set[asyncio.Task[None]] = set()
        count = 0
        for task in tasks:
            pending.add(asyncio.create_task(self.publish(task)))
            count += 1
            if len(pending) >= window:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    finished.result()
        if pending:
            for finished in (await asyncio.wait(pending))[0]:
                finished.result()
        return count

    async def results(self, idle_timeout: float | None = None) -> AsyncIterator[Result]:
        """Every stored final result of this tenant, oldest first, then new ones as they come.

        Stops after `idle_timeout` seconds without a new result (None: never).
        """
        js = self.nc.jetstream()
        sub = await js.subscribe(subjects.results_of(self.tenant), ordered_consumer=True,
                                 config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=idle_timeout or 3600.0)
                except nats.errors.TimeoutError:
                    if idle_timeout is not None:
                        return
                    continue
                yield Result.model_validate_json(msg.data)
        finally:
            with contextlib.suppress(nats.errors.Error):  # the connection may be draining
                await sub.unsubscribe()
