"""Cancellation requests, kept in the `cancels` bucket and mirrored in memory by a KV watch.

A cancel that arrives before a task's final result makes that result `canceled`: the
intake, the batcher and the notifier each look here before they pass a task on (and publish
that result with `publishing.publish_canceled`).
"""

import logging
from datetime import UTC, datetime

from nats.js.kv import KeyValue

from batchbus.shared import subjects

log = logging.getLogger("batchbus.cancels")


class Cancels:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self.keys: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    async def load(self) -> None:
        """Reads every request made so far."""
        watcher = await self.kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:  # the initial values are in
                    return
                self._apply(entry.key, entry.operation)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    async def follow(self) -> None:
        """A service loop: mirrors every request as it is made."""
        watcher = await self.kv.watchall()
        try:
            async for entry in watcher:
                if entry is not None:
                    self._apply(entry.key, entry.operation)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    async def request(self, tenant: str, task_id: str) -> None:
        key = subjects.task_key(tenant, task_id)
        await self.kv.put(key, datetime.now(UTC).isoformat().encode())
        self.keys.add(key)

    def _apply(self, key: str, operation: str | None) -> None:
        if operation in ("DEL", "PURGE"):
            self.keys.discard(key)
        else:
            self.keys.add(key)
