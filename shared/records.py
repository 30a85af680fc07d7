"""The write-ahead state of batches: records in KV `batches` (compare-and-set) and their
manifests in the object store `batch_manifests`, kept together in one place."""

import asyncio
import logging
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from batchbus.shared import subjects
from batchbus.shared.models import BatchRecord, ManifestEntry

log = logging.getLogger("batchbus.records")

Change = Callable[[BatchRecord], BatchRecord | None]

KV_STREAM = f"KV_{subjects.KV_BATCHES}"
MANIFESTS_STREAM = subjects.obj_stream(subjects.OBJ_MANIFESTS)
KV_SUBJECTS = f"$KV.{subjects.KV_BATCHES}."


class BatchRecords:
    def __init__(self, js: JetStreamContext, kv: KeyValue, manifests: ObjectStore,
                 marker_ttl: float | None = None) -> None:
        self.js = js
        self.kv = kv
        self.manifests = manifests
        # How long a retired record's marker stays (NATS_RETIRED_MARKER_TTL_SECONDS, as
        # streams.batch_records passes it): long past any redelivery, recovery or stale intent
        # that could look for it, and then the bucket's subjects stop growing with every batch
        # ever retired. None (a reader that retires nothing, or a bucket without per-message
        # TTLs): plain delete markers, which stay.
        self.marker_ttl = marker_ttl
        self._gone: set[str] = set()  # keys seen deleted (see `all`)
        self._listed: tuple[int, list[BatchRecord]] | None = None  # last seq, live records
        self._reconnects = 0

    @property
    def version(self) -> int | None:
        """The bucket's last sequence as of the last listing (`all`): the same version, the
        same records."""
        return None if self._listed is None else self._listed[0]

    async def read(self, key: str) -> tuple[BatchRecord, int] | None:
        """The record and its revision, or None if it was never written or is deleted."""
        try:
            entry = await self.kv.get(key)
        except NotFoundError:  # KeyNotFoundError and KeyDeletedError alike
            return None
        if entry.value is None:
            return None
        return BatchRecord.model_validate_json(entry.value), entry.revision or 0

    async def all(self) -> list[BatchRecord]:
        """Every live record. Keys come from the bucket's stream state: nats-py's
        `kv.keys()` leaves a consumer behind per call, and the server refuses the 1001st.

        A key found deleted is not read again: every retired batch leaves a delete marker,
        and reading each one every second made the listing grow with history. Intent ids
        are never reused, so a deleted record stays deleted, unless the server lost the
        deletion; only a server restart can, and that reconnects this client, after which
        every key is read again. Nothing is read while nothing was written."""
        reconnects = self.js._nc.stats["reconnects"]  # nats-py has no public counter
        if reconnects != self._reconnects:
            self._gone.clear()
            self._listed = None
            self._reconnects = reconnects
        # Every write to the bucket takes the next sequence: an unchanged last sequence means
        # unchanged records, and an idle listing costs one small request.
        last = (await self.js.stream_info(KV_STREAM)).state.last_seq
        if self._listed is not None and self._listed[0] == last:
            return list(self._listed[1])
        info = await self.js.stream_info(KV_STREAM, subjects_filter=KV_SUBJECTS + ">")
        keys = {s.removeprefix(KV_SUBJECTS) for s in info.state.subjects or {}}
        self._gone &= keys  # markers the server removed
        wanted = sorted(keys - self._gone)
        found = await asyncio.gather(*(self.read(key) for key in wanted))
        self._gone.update(key for key, f in zip(wanted, found, strict=True) if f is None)
        live = [f[0] for f in found if f is not None]
        self._listed = (last, live)  # as of `last` at least: later writes raise it again
        return list(live)

    async def create(self, intent: BatchRecord, rows: list[bytes]) -> int:
        """Writes the manifest (its entries' rows, ManifestEntry.to_row), then the intent;
        returns the intent's revision."""
        data = b"\n".join([*rows, b""])
        await self.manifests.put(intent.intent_id, data)
        return int(await self.kv.create(intent.intent_id, intent.model_dump_json().encode()))

    async def transition(self, key: str, change: Change) -> BatchRecord | None:
        """Applies `change` with compare-and-set, re-reading on conflict; `change` returns
        None to leave the record as it is. None when the record does not exist."""
        while True:
            found = await self.read(key)
            if found is None:
                return None
            record, revision = found
            new = change(record)
            if new is None or new == record:
                return record
            try:
                await self.kv.update(key, new.model_dump_json().encode(), last=revision)
                return new
            except KeyWrongLastSequenceError:
                log.debug("record %s changed under us; re-reading", key)

    async def settle(self, key: str, change: Change) -> None:
        """Applies `change`, then retires the record if its batch is delivered and its task
        messages are all acknowledged: until both, a redelivered task must find it."""
        record = await self.transition(key, change)
        if record is not None and record.state == "delivered" and record.acked:
            await self._retire(key)
            await self._delete_manifest(key)

    async def forget(self, intent: BatchRecord, revision: int) -> bool:
        """Drops an intent that created nothing, unless it changed since `revision`."""
        try:
            await self.kv.delete(intent.intent_id, last=revision)
        except KeyWrongLastSequenceError:
            return False
        await self._retire(intent.intent_id)  # deleted already: only its marker changes
        await self._delete_manifest(intent.intent_id)
        return True

    async def _retire(self, key: str) -> None:
        """Deletes the record, leaving a marker that expires after `marker_ttl`."""
        if self.marker_ttl is None:
            await self.kv.delete(key)
        else:
            await self.kv.purge(key, msg_ttl=self.marker_ttl)

    async def manifest(self, key: str) -> list[ManifestEntry]:
        """The manifest's entries; none if it is gone (its record is being retired)."""
        return [ManifestEntry.from_row(row) for row in (await self.manifest_index(key)).values()]

    async def manifest_index(self, key: str) -> dict[str, bytes]:
        """custom_id -> the entry's row, parsed only when its result line comes (less memory)."""
        try:
            result = await self.manifests.get(key)
        except NotFoundError:  # ObjectNotFoundError included
            return {}
        # A row starts `["<custom_id>",`; custom ids hold no characters JSON escapes.
        return {row[2:row.index(b'"', 2)].decode(): row
                for row in (result.data or b"").splitlines() if row}

    async def _delete_manifest(self, key: str) -> None:
        """Purges the manifest, chunks and description both. nats-py's delete would leave a
        description marked deleted in its place, and the store keeps no max age: one message
        per batch ever made, for ever. Only the record's retirement reads a manifest's
        absence, and the record is gone."""
        bucket = subjects.OBJ_MANIFESTS
        try:
            info = await self.manifests.get_info(key)
        except NotFoundError:  # ObjectNotFoundError included; a deleted one's chunks are gone
            info = None
        if info is not None and info.nuid:
            await self.js.purge_stream(MANIFESTS_STREAM,
                                       subject=subjects.obj_chunks(bucket, info.nuid))
        await self.js.purge_stream(MANIFESTS_STREAM, subject=subjects.obj_meta(bucket, key))
