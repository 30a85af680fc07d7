"""A lease in a KV bucket: one holder at a time, taken over when the holder stops renewing.

Holders compare wall clocks, so replicas' clocks must agree to well within the lease's TTL.
"""

import json
import time
import uuid
from time import monotonic

from nats.js.errors import KeyDeletedError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue


class Lease:
    def __init__(self, kv: KeyValue, name: str, ttl: float) -> None:
        self.kv = kv
        self.name = name
        self.ttl = ttl
        self.owner = uuid.uuid4().hex
        # Until when a lease we wrote is surely ours without a look: no one may take it before
        # its `until`, a full TTL after our write; renewing at a third of it leaves two thirds
        # for a slow renewal. Idle, that is two KV requests every 5 s instead of every second.
        self._sure_until = float("-inf")

    async def hold(self) -> bool:
        """Takes or renews the lease; False while someone else holds it."""
        if monotonic() < self._sure_until:
            return True
        self._sure_until = float("-inf")
        now, since = time.time(), monotonic()  # the same moment, on both clocks
        value = json.dumps({"owner": self.owner, "until": now + self.ttl}).encode()
        try:
            entry = await self.kv.get(self.name)
        except KeyDeletedError as gone:  # released: take it over from the delete marker
            return await self._write(value, gone.entry.revision if gone.entry else None, since)
        except NotFoundError:
            return await self._write(value, None, since)
        current = json.loads(entry.value or b"{}")
        if current.get("owner") != self.owner and current.get("until", 0) > now:
            return False
        return await self._write(value, entry.revision, since)

    async def release(self) -> None:
        """Lets a standby take over at once (on a clean shutdown)."""
        self._sure_until = float("-inf")
        try:
            entry = await self.kv.get(self.name)
            if json.loads(entry.value or b"{}").get("owner") == self.owner:
                await self.kv.delete(self.name, last=entry.revision)
        except (NotFoundError, KeyWrongLastSequenceError):
            pass

    async def _write(self, value: bytes, revision: int | None, since: float) -> bool:
        """Writes the lease, valid until a TTL after `since` (monotonic)."""
        try:
            if revision is None:
                await self.kv.create(self.name, value)
            else:
                await self.kv.update(self.name, value, last=revision)
        except KeyWrongLastSequenceError:
            return False  # another replica got there first
        self._sure_until = since + self.ttl / 3
        return True
