"""Declares the JetStream streams and buckets batchbus needs (idempotent, at start-up)."""

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, ObjectStoreConfig, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from batchbus.shared import subjects
from batchbus.shared.records import BatchRecords
from batchbus.shared.settings import NatsSettings

DAY = 24 * 3600.0


def _dedup(max_age: float) -> float:
    """The duplicate window: two hours, but never past max_age, which nats-server refuses (a
    retention of minutes, as bench/soak.py's scaled time sets; 0 means kept for ever)."""
    return min(DAY / 12, max_age) if max_age else DAY / 12


def stream_configs(settings: NatsSettings) -> list[StreamConfig]:
    replicas = settings.replicas
    return [
        # Tasks are durable as soon as the publish is acknowledged, even with intake down.
        StreamConfig(name=subjects.STREAM_TASKS, subjects=[subjects.TASKS_ALL],
                     max_age=settings.results_max_age_seconds,
                     duplicate_window=_dedup(settings.results_max_age_seconds),
                     num_replicas=replicas, discard=DiscardPolicy.NEW),
        StreamConfig(name=subjects.STREAM_CANCELS, subjects=[subjects.CANCEL_ALL],
                     max_age=settings.results_max_age_seconds,
                     duplicate_window=_dedup(settings.results_max_age_seconds),
                     num_replicas=replicas),
        StreamConfig(name=subjects.STREAM_INTERNAL, subjects=[subjects.INTERNAL_ALL],
                     max_age=settings.internal_max_age_seconds,
                     duplicate_window=_dedup(settings.internal_max_age_seconds),
                     num_replicas=replicas),
        StreamConfig(name=subjects.STREAM_RESULTS, subjects=[subjects.RESULTS_ALL],
                     max_age=settings.results_max_age_seconds,
                     duplicate_window=_dedup(settings.results_max_age_seconds),
                     num_replicas=replicas),
        StreamConfig(name=subjects.STREAM_EVENTS, subjects=[subjects.EVENTS_ALL],
                     max_age=settings.results_max_age_seconds,
                     duplicate_window=_dedup(settings.results_max_age_seconds),
                     num_replicas=replicas),
        # Kept until an operator purges them: each is a task that used up its attempts.
        StreamConfig(name=subjects.STREAM_DEAD_LETTERS, subjects=[subjects.DEAD_LETTERS_ALL],
                     duplicate_window=DAY / 12, num_replicas=replicas),
    ]


async def ensure_streams(js: JetStreamContext, settings: NatsSettings) -> None:
    for config in stream_configs(settings):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)


async def task_ids_bucket(js: JetStreamContext, settings: NatsSettings) -> KeyValue:
    return await _bucket(js, KeyValueConfig(
        bucket=subjects.KV_TASK_IDS, history=1, ttl=settings.task_ids_ttl_seconds,
        replicas=settings.replicas))


async def batches_bucket(js: JetStreamContext, settings: NatsSettings) -> KeyValue:
    return await _bucket(js, KeyValueConfig(
        bucket=subjects.KV_BATCHES, history=1, replicas=settings.replicas))


async def batch_records(js: JetStreamContext, settings: NatsSettings) -> BatchRecords:
    kv = await batches_bucket(js, settings)
    ttl_allowed = (await js.stream_info(subjects.kv_stream(subjects.KV_BATCHES))).config.allow_msg_ttl
    return BatchRecords(js, kv, await manifests_store(js, settings),
                        settings.retired_marker_ttl_seconds if ttl_allowed else None)


async def batch_ids_bucket(js: JetStreamContext, settings: NatsSettings) -> KeyValue:
    # Kept as long as the API keeps a batch's results (29 days), so an old batch of ours is
    # never mistaken for the unknown outcome of a new create.
    return await _bucket(js, KeyValueConfig(
        bucket=subjects.KV_BATCH_IDS, history=1, ttl=30 * DAY, replicas=settings.replicas))


async def cancels_bucket(js: JetStreamContext, settings: NatsSettings) -> KeyValue:
    return await _bucket(js, KeyValueConfig(
        bucket=subjects.KV_CANCELS, history=1, ttl=settings.task_ids_ttl_seconds,
        replicas=settings.replicas))


async def budgets_bucket(js: JetStreamContext, settings: NatsSettings) -> KeyValue:
    # A day's total is settled as late as its last task's final result (attempts of up to
    # 24 h each, NOTIFIER_MAX_ATTEMPTS of them), then only read; 8 days covers both.
    return await _bucket(js, KeyValueConfig(
        bucket=subjects.KV_BUDGETS, history=1, ttl=8 * DAY, replicas=settings.replicas))


async def realtime_calls_bucket(js: JetStreamContext, settings: NatsSettings) -> KeyValue:
    # A marker lives as long as its task id is remembered, so a late redelivery still finds it.
    return await _bucket(js, KeyValueConfig(
        bucket=subjects.KV_REALTIME_CALLS, history=1, ttl=settings.task_ids_ttl_seconds,
        replicas=settings.replicas))


async def leases_bucket(js: JetStreamContext, settings: NatsSettings) -> KeyValue:
    return await _bucket(js, KeyValueConfig(
        bucket=subjects.KV_LEASES, history=1, replicas=settings.replicas))


async def manifests_store(js: JetStreamContext, settings: NatsSettings) -> ObjectStore:
    try:
        return await js.object_store(subjects.OBJ_MANIFESTS)
    except (BucketNotFoundError, NotFoundError):
        # nats-py takes the bucket name apart from the config (it overwrites config.bucket).
        return await js.create_object_store(
            subjects.OBJ_MANIFESTS, config=ObjectStoreConfig(replicas=settings.replicas))


async def _bucket(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    try:
        return await js.key_value(config.bucket)
    except (BucketNotFoundError, NotFoundError):
        return await js.create_key_value(config=config)
