"""Typed compare-and-set access to the `batches` bucket and the manifest store."""

import json
import logging
from collections.abc import Callable, Iterable

from nats.js.errors import (
    KeyWrongLastSequenceError,
    NoKeysError,
    NotFoundError,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from shared.models import BatchRecord, ManifestEntry

log = logging.getLogger("batchbus.kv")


async def read_record(kv: KeyValue, key: str) -> tuple[BatchRecord, int] | None:
    try:
        entry = await kv.get(key)
    except NotFoundError:  # never written (KeyNotFoundError) or deleted (KeyDeletedError)
        return None
    if entry.value is None:
        return None
    return BatchRecord.model_validate_json(entry.value), entry.revision or 0


async def transition(kv: KeyValue, key: str,
                     change: Callable[[BatchRecord], BatchRecord | None]) -> BatchRecord | None:
    """Applies `change` to the stored record with compare-and-set, re-reading on conflict.

    `change` returns None to leave the record as it is. Returns the stored record, or None
    when the key does not exist.
    """
    while True:
        found = await read_record(kv, key)
        if found is None:
            return None
        record, revision = found
        new = change(record)
        if new is None or new == record:
            return record
        try:
            await kv.update(key, new.model_dump_json().encode(), last=revision)
            return new
        except KeyWrongLastSequenceError:
            log.debug("record %s changed under us; re-reading", key)


async def settle(kv: KeyValue, store: ObjectStore, key: str,
                 change: Callable[[BatchRecord], BatchRecord | None]) -> None:
    """Applies `change`, then retires the record if its batch is delivered and its task
    messages are all acknowledged: until both, a redelivered task must find it."""
    record = await transition(kv, key, change)
    if record is not None and record.state == "delivered" and record.acked:
        await kv.delete(key)
        await delete_manifest(store, key)


async def all_records(kv: KeyValue) -> list[BatchRecord]:
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    records = []
    for key in keys:
        found = await read_record(kv, key)
        if found is not None:
            records.append(found[0])
    return records


async def put_manifest(store: ObjectStore, name: str, entries: Iterable[ManifestEntry]) -> None:
    data = b"".join(e.model_dump_json().encode() + b"\n" for e in entries)
    await store.put(name, data)


async def get_manifest(store: ObjectStore, name: str) -> list[ManifestEntry]:
    """The manifest's entries; none if it is gone (its record is being deleted)."""
    try:
        result = await store.get(name)
    except NotFoundError:  # ObjectNotFoundError included
        return []
    data = result.data or b""
    return [ManifestEntry.model_validate_json(line) for line in data.splitlines() if line]


async def manifest_index(store: ObjectStore, name: str) -> dict[str, bytes]:
    """custom_id -> the entry's JSON, parsed only when its result line comes (less memory)."""
    result = await store.get(name)
    index = {}
    for line in (result.data or b"").splitlines():
        if line:
            index[json.loads(line)["custom_id"]] = line
    return index


async def delete_manifest(store: ObjectStore, name: str) -> None:
    try:
        await store.delete(name)
    except NotFoundError:
        pass
