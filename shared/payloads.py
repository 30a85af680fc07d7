"""The claim check: task params and answers too large for one NATS message live in the
tenant's object store bucket (`payloads_<tenant>`), and the message names the object instead.

Every side uses this module: the client and the CLI store params and read answers, intake
validates stored params, the batcher streams them into a create body, the notifier stores
large answers and deletes params once a task's final result is stored. docs/payloads.md
describes the same for users of other NATS clients.
"""

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import ObjectInfo, ObjectMeta, ObjectMetaOptions, ObjectStoreConfig
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from batchbus.shared import subjects

if TYPE_CHECKING:  # the client package has no prometheus-client: only services meter
    from prometheus_client import Counter

# Room kept in a message for its headers (Nats-Msg-Id and the like, which max_payload counts)
# and for the fields around a payload: anything closer to max_payload goes to the store.
HEADROOM = 4096
# nats-py's chunk size, unless the server's max_payload is smaller: a stored payload is read
# back one chunk at a time.
CHUNK_BYTES = 128 * 1024
# The Messages API's request size limit: params larger than this cannot be sent even alone.
MAX_PARAMS_BYTES = 32 * 1024 * 1024


def fits(size: int, max_payload: int) -> bool:
    """Whether a message body of `size` bytes can be published inline."""
    return size + HEADROOM <= max_payload


def params_name(task_id: str, data: bytes) -> str:
    """The object name the client stores a task's params under: the task id and a digest of
    the params, so the same params are stored once and other params never replace them."""
    return f"params.{task_id}.{hashlib.sha256(data).hexdigest()[:16]}"


def answer_name(task_id: str) -> str:
    """The object name of a task's stored answer: one per task, as its final result is."""
    return f"answer.{task_id}"


class PayloadMissing(Exception):
    """The named object is not in the tenant's bucket (never stored, expired or deleted)."""


class PayloadChanged(PayloadMissing):
    """The object was replaced after it was checked: what was checked is gone."""


class PayloadBucketMissing(Exception):
    """The tenant's bucket does not exist and this NATS user may not create it."""


class PayloadTooLarge(Exception):
    """The named object is larger than the reader allows."""


@dataclass(frozen=True, slots=True)
class Stored:
    name: str
    size: int
    digest: str  # as the object store states it: `SHA-256=<urlsafe base64>`


def digest_of(data: bytes) -> str:
    return _stated(hashlib.sha256(data))


def _stated(sha: "hashlib._Hash") -> str:
    """A SHA-256 as the object store states it in an ObjectInfo."""
    return "SHA-256=" + base64.urlsafe_b64encode(sha.digest()).decode()


class Payloads:
    """The payload buckets of every tenant, opened (or created) on first use.

    `ttl` is the buckets' max age (NATS_PAYLOADS_MAX_AGE_SECONDS): what no one deletes goes
    then. Creating a bucket needs the permission to: a service's user has it, a tenant's
    (deploy/nats/accounts.conf) has not, and gets PayloadBucketMissing.
    """

    def __init__(self, js: JetStreamContext, ttl: float, replicas: int = 1,
                 metered: "Counter | None" = None) -> None:
        self.js = js
        self.ttl = ttl
        self.replicas = replicas
        self.metered = metered  # ServiceMetrics.payload_bytes_counter(), in a service
        self._stores: dict[str, ObjectStore] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    async def bucket(self, tenant: str) -> ObjectStore:
        store = self._stores.get(tenant)
        if store is not None:
            return store
        async with self._opening.setdefault(tenant, asyncio.Lock()):
            if tenant not in self._stores:
                self._stores[tenant] = await self._open(subjects.payloads(tenant))
            return self._stores[tenant]

    async def _open(self, name: str) -> ObjectStore:
        try:
            return await self.js.object_store(name)
        except (BucketNotFoundError, NotFoundError):
            pass
        try:
            # nats-py takes the bucket name apart from the config (it overwrites config.bucket).
            return await self.js.create_object_store(name, config=ObjectStoreConfig(
                ttl=self.ttl, replicas=self.replicas,
                description="batchbus payloads too large for one message"))
        except NatsTimeout:  # a create the user may not send is never answered
            tenant = name.removeprefix(subjects.OBJ_PAYLOADS_PREFIX)
            raise PayloadBucketMissing(
                f"object store {name} does not exist and this NATS user may not create it: "
                f"create it once with `batchbus payloads init {tenant}` as a service's user "
                "(docs/payloads.md)") from None

    async def put(self, tenant: str, name: str, data: bytes) -> Stored:
        """Stores `data` under `name` unless an object of that name holds the same bytes
        already (a replay stores nothing, and a reader of the object is never cut off)."""
        store = await self.bucket(tenant)
        digest = digest_of(data)
        try:
            info = await store.get_info(name)
            if info.size == len(data) and info.digest == digest:
                return Stored(name, len(data), digest)
        except ObjectNotFoundError:
            pass
        # nats-py's chunks are 128 KiB whatever the server takes: smaller on a smaller server
        # (nats-py gives the context no public way to its connection).
        chunk = min(CHUNK_BYTES, self.js._nc.max_payload - HEADROOM)
        info = await store.put(name, data, meta=ObjectMeta(
            name=name, options=ObjectMetaOptions(max_chunk_size=chunk)))
        self._count("stored", info.size or 0)
        return Stored(name, info.size or 0, digest)

    async def info(self, tenant: str, name: str, digest: str | None = None) -> ObjectInfo:
        """The object's info; PayloadChanged if its digest is not `digest` (when given): a
        tenant may replace its object after intake checked it, and what goes on must be what
        was checked."""
        store = await self.bucket(tenant)
        try:
            info = await store.get_info(name)
        except ObjectNotFoundError:
            raise PayloadMissing(_missing(tenant, name)) from None
        if digest is not None and info.digest != digest:
            raise PayloadChanged(f"object {name!r} of {subjects.payloads(tenant)} was replaced "
                                 "after intake checked it: store new params under a new name "
                                 "and send a new task")
        return info

    async def load(self, tenant: str, name: str, limit: int | None = None,
                   digest: str | None = None) -> tuple[bytes, str]:
        """The whole object and its digest; PayloadTooLarge if it is over `limit` bytes."""
        info = await self.info(tenant, name, digest)
        if limit is not None and (info.size or 0) > limit:
            raise PayloadTooLarge(f"object {name!r} is {info.size:,} bytes, over the limit of "
                                  f"{limit:,}")
        data = b"".join([chunk async for chunk in self.chunks(tenant, info)])
        return data, info.digest or ""

    async def read(self, tenant: str, name: str, limit: int | None = None,
                   digest: str | None = None) -> bytes:
        return (await self.load(tenant, name, limit, digest))[0]

    async def chunks(self, tenant: str, info: ObjectInfo) -> AsyncIterator[bytes]:
        """The object's bytes one chunk at a time, each fetched when the last is taken: a
        reader holds one chunk, never the object. Its digest is checked at the end."""
        bucket = subjects.payloads(tenant)
        stream, subject = subjects.obj_stream(bucket), subjects.obj_chunks(bucket, info.nuid or "")
        digest = hashlib.sha256()
        seq, read = 0, 0
        while read < (info.size or 0):
            try:
                msg = await self.js.get_msg(stream, seq=seq + 1, subject=subject, next=True,
                                            direct=True)
            except NotFoundError:  # deleted or expired while being read
                raise PayloadMissing(_missing(tenant, info.name or "")) from None
            data = msg.data or b""
            seq = msg.seq or seq + 1
            read += len(data)
            digest.update(data)
            self._count("read", len(data))
            yield data
        if read != info.size or _stated(digest) != info.digest:
            raise PayloadMissing(f"object {info.name!r} of tenant {tenant} changed while read")

    async def delete(self, tenant: str, name: str) -> bool:
        """Deletes the object; False if it was gone already."""
        store = await self.bucket(tenant)
        try:
            info = await store.get_info(name)
            await store.delete(name)
        except ObjectNotFoundError:
            return False
        self._count("deleted", info.size or 0)
        return True

    def _count(self, operation: str, size: int) -> None:
        if self.metered is not None:
            self.metered.labels(operation).inc(size)


def _missing(tenant: str, name: str) -> str:
    return (f"object {name!r} is not in {subjects.payloads(tenant)} (never stored, or past its "
            "retention): store the params again and resend the task")
