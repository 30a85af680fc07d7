"""Delivers one ended batch: every result line becomes a final Result or a retry."""

import logging
from datetime import UTC, datetime
from typing import Any

from anthropic import AsyncAnthropic
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from services.notifier.results import (
    Retry,
    build_result,
    classify,
    last_attempt,
    latency_seconds,
    missing_result,
)
from shared import kv as records
from shared import subjects
from shared.metrics import Metrics
from shared.models import AcceptedTask, BatchEnded, ManifestEntry, Result
from shared.pricing import PriceTable
from shared.publishing import publish_result

log = logging.getLogger("batchbus.notifier")

HEARTBEAT_EVERY = 500  # result lines between in_progress() calls on the handoff message


class Delivery:
    def __init__(self, js: JetStreamContext, client: AsyncAnthropic, batches: KeyValue,
                 manifests: ObjectStore, prices: PriceTable, max_attempts: int,
                 metrics: Metrics) -> None:
        self.js = js
        self.client = client
        self.batches = batches
        self.manifests = manifests
        self.prices = prices
        self.max_attempts = max_attempts
        self.metrics = metrics

    async def deliver(self, ended: BatchEnded, keep_alive: Any) -> None:
        """Publishes every task's outcome; safe to repeat (results carry Nats-Msg-Ids)."""
        found = await records.read_record(self.batches, ended.intent_id)
        if found is None or found[0].state == "delivered":
            return  # delivered by an earlier run
        manifest = {e.custom_id: e for e in
                    await records.get_manifest(self.manifests, ended.intent_id)}
        lines = 0
        async for line in await self.client.messages.batches.results(ended.batch_id):
            entry = manifest.pop(line.custom_id, None)
            if entry is None:
                # Not ours (an adopted batch that was not this intent's?): alert, never guess.
                self.metrics.result_mismatches.inc()
                log.error("batch %s returned unknown custom_id %s", ended.batch_id, line.custom_id)
                continue
            await self.settle(entry, line.result.to_dict(), ended.batch_id)
            lines += 1
            if lines % HEARTBEAT_EVERY == 0:
                await keep_alive()
        for entry in manifest.values():
            await self.settle(entry, missing_result(), ended.batch_id)
        # Only now is the batch done with; a crash before this replays deduplicated results.
        await records.settle(self.batches, self.manifests, ended.intent_id,
                             lambda r: r.model_copy(update={"state": "delivered"}))
        log.info("delivered batch %s (%d lines)", ended.batch_id, lines)

    async def settle(self, entry: ManifestEntry, result: dict[str, Any], batch_id: str) -> None:
        outcome = classify(result, entry.attempt, self.max_attempts)
        if isinstance(outcome, Retry):
            if await self.retry(entry, outcome):
                return
            outcome = last_attempt(result, entry.attempt)
        await self.publish(build_result(entry, outcome, batch_id, self.prices), entry)

    async def retry(self, entry: ManifestEntry, retry: Retry) -> bool:
        """Sends the next attempt back to the batcher; False if the task is gone."""
        try:
            stored = await self.js.get_msg(subjects.STREAM_INTERNAL, entry.accepted_seq)
        except Exception:
            log.exception("task %s/%s is no longer in the stream; not retried",
                          entry.tenant, entry.task_id)
            return False
        task = AcceptedTask.model_validate_json(stored.data or b"")
        nxt = task.model_copy(update={"attempt": entry.attempt + 1})
        await self.js.publish(
            subjects.accepted(nxt.tenant), nxt.model_dump_json().encode(),
            stream=subjects.STREAM_INTERNAL,
            headers={subjects.MSG_ID: subjects.accepted_msg_id(nxt.tenant, nxt.task_id,
                                                                nxt.attempt)})
        self.metrics.retries.labels(retry.reason).inc()
        return True

    async def publish(self, result: Result, entry: ManifestEntry) -> None:
        msg_id = subjects.result_msg_id(result.tenant, result.task_id)
        if not await publish_result(self.js, result, msg_id):
            return  # a replay: counted the first time
        self.metrics.results.labels(result.status).inc()
        self.metrics.task_latency.observe(latency_seconds(entry, datetime.now(UTC)))
        if result.usage is not None:
            self._account(result, entry.model)

    def _account(self, result: Result, model: str) -> None:
        usage = result.usage
        assert usage is not None
        for kind, value in (("input", usage.input_tokens), ("output", usage.output_tokens),
                            ("cache_write", usage.cache_creation_input_tokens),
                            ("cache_read", usage.cache_read_input_tokens)):
            self.metrics.tokens.labels(kind, model).inc(value)
        if result.cost is None:
            self.metrics.unknown_models.inc()
            log.warning("no price for model %s; cost of %s not counted", model, result.task_id)
            return
        self.metrics.cost_batch.inc(result.cost.batch_usd)
        self.metrics.cost_realtime.inc(result.cost.realtime_usd)
        self.metrics.cost_saved.inc(result.cost.saved_usd)
