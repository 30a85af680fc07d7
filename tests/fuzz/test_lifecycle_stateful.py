"""A Hypothesis state machine over the task lifecycle, driving the project's own batcher
(Collector, Submitter, Guard) and notifier (Delivery) against a real nats-server and the
emulator through the real SDK. Whatever the order of publishes, deliveries, redeliveries,
flushes, crashes at each submission step and interrupted result deliveries:

- billed at most once: no task attempt is in two batch creates (checked after every step);
- at most one final result per task (after every step), exactly one once everything settles,
  and the one its emulated outcome calls for.

A crash is a cancelled coroutine plus what the server does when a consumer dies: the
messages it held come back (nak with no delay stands in for the ack wait running out)."""

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import nats
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from batchbus.emulator.config import EmulatorConfig
from batchbus.emulator.server import EmulatorHandle, start_emulator
from batchbus.launcher.nats_server import NatsServer, start_nats
from batchbus.services.batcher.batching import custom_id
from batchbus.services.batcher.collector import Collector
from batchbus.services.batcher.metrics import BatcherMetrics
from batchbus.services.batcher.settings import BatcherSettings
from batchbus.services.batcher.submission import Submitter
from batchbus.services.notifier.accounting import Accounting
from batchbus.services.notifier.delivery import Delivery
from batchbus.services.notifier.metrics import NotifierMetrics
from batchbus.services.notifier.settings import NotifierSettings
from batchbus.shared import consumer, streams, subjects
from batchbus.shared.anthropic_client import make_client
from batchbus.shared.cancels import Cancels
from batchbus.shared.models import AcceptedTask, BatchEnded
from batchbus.shared.payloads import Payloads
from batchbus.shared.pricing import default_prices
from batchbus.shared.publishing import publish_accepted
from batchbus.shared.records import BatchRecords
from batchbus.shared.settings import AnthropicSettings, NatsSettings
from tests.conftest import TEST_API_KEY
from tests.integration.helpers import MODEL

pytestmark = [pytest.mark.nats, pytest.mark.slow]

TASKS = 5
# Each task's emulated outcome, and the final status it must end with.
OUTCOMES = {"succeeded": "succeeded", "errored:api_error:first=1": "succeeded",
            "errored:invalid_request_error": "errored"}
STEP_BOUND = 10.0  # seconds any one step may take
SETTLE_BOUND = 30.0  # seconds for everything to settle at the end of an example


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A server of its own: each example deletes and re-creates every stream on it."""
    server = start_nats(str(tmp_path_factory.mktemp("nats-stateful")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fast_emulator() -> Iterator[EmulatorHandle]:
    handle = start_emulator(EmulatorConfig(processing_seconds=0, api_keys={TEST_API_KEY}))
    yield handle
    handle.stop()


def run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
        bound: float = STEP_BOUND) -> Any:
    return loop.run_until_complete(asyncio.wait_for(coro, bound))


async def until(condition: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    """Polls `condition` until it holds (True) or `timeout` passes (False)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.002)  # poll interval
    return True


class Lifecycle(RuleBasedStateMachine):
    nats_url: ClassVar[str]
    emulator: ClassVar[EmulatorHandle]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tenant = "s" + uuid.uuid4().hex[:10]
        self.published: set[int] = set()
        self.outcome = {i: list(OUTCOMES)[i % len(OUTCOMES)] for i in range(TASKS)}
        self.emulator.reset()
        self.emulator.configure(faults=[])
        run(self.loop, self._connect())

    async def _connect(self) -> None:
        self.nc = await nats.connect(self.nats_url)
        self.js: JetStreamContext = self.nc.jetstream()
        for name in await self.js.streams_info():  # a fresh start for every example
            await self.js.delete_stream(name.config.name or "")
        nats_settings = NatsSettings(url=self.nats_url)
        anthropic = AnthropicSettings(api_key=TEST_API_KEY, base_url=self.emulator.url,
                                      timeout_seconds=0.5)
        self.batcher_settings = BatcherSettings(
            nats=nats_settings, anthropic=anthropic, max_requests=3, fetch_batch=4,
            max_wait_seconds=3600, ack_wait_seconds=2, recovery_interval_seconds=3600,
            doubt_settle_seconds=0, intent_stale_seconds=0.6, retry_delay_seconds=0.05,
            retry_max_delay_seconds=0.1)  # the tests' rules flush and recover
        self.notifier_settings = NotifierSettings(nats=nats_settings, anthropic=anthropic,
                                                  retry_delay_seconds=0)
        await streams.ensure_streams(self.js, nats_settings)
        self.records: BatchRecords = await streams.batch_records(self.js, nats_settings)
        self.batch_ids = await streams.batch_ids_bucket(self.js, nats_settings)
        self.cancels = Cancels(await streams.cancels_bucket(self.js, nats_settings))
        self.client = make_client(anthropic, max_retries=0)
        self.delivery = Delivery(self.js, make_client(anthropic), self.records, self.cancels,
                                 self.notifier_settings,
                                 Accounting(NotifierMetrics(), default_prices()))
        await self._start_batcher()

    async def _start_batcher(self) -> None:
        """A new batcher run: recovery first, as Collector.run does, then the consumer."""
        metrics = BatcherMetrics()
        submitter = Submitter(self.client, self.records, self.batch_ids, metrics,
                              self.batcher_settings.doubt_settle_seconds,
                              self.batcher_settings.anthropic.timeout_seconds,
                              self.batcher_settings.intent_stale_seconds,
                              Payloads(self.js, 3600))
        self.collector = Collector(self.js, submitter, self.cancels, self.batcher_settings,
                                   metrics)
        await self.collector.recover()
        self.pull = consumer.pull(self.js, subjects.ACCEPTED_ALL, subjects.DURABLE_BATCHER,
                                  subjects.STREAM_INTERNAL,
                                  ConsumerConfig(ack_wait=self.batcher_settings.ack_wait_seconds,
                                                 max_deliver=-1))
        self.psub = await self.pull.__aenter__()

    async def _crash_batcher(self, held: list[Msg] | None = None) -> None:
        """The batcher dies: nothing more from it, and what it held comes back."""
        if held is None:
            held = [item.msg for item in self.collector.pending.items]
        await self.pull.__aexit__(None, None, None)
        await _comes_back(self.nc, held)
        await self._start_batcher()

    def teardown(self) -> None:
        try:
            run(self.loop, self._settle_and_check(), SETTLE_BOUND + STEP_BOUND)
        finally:
            self.loop.run_until_complete(self._close())
            self.loop.close()

    async def _close(self) -> None:
        await self.pull.__aexit__(None, None, None)
        await self.client.close()
        await self.delivery.client.close()
        await self.nc.close()

    # ---- the task's side: intake hands attempts to the batcher ----

    def _task(self, i: int) -> AcceptedTask:
        directive = f"emulate:{self.outcome[i]}"
        return AcceptedTask(tenant=self.tenant, task_id=f"task-{i}", published_at=datetime.now(UTC),
                            params={"model": MODEL, "max_tokens": 16,
                                    "metadata": {"user_id": directive},
                                    "messages": [{"role": "user", "content": f"task {i}"}]})

    @initialize(first=st.sets(st.integers(0, TASKS - 1), min_size=1))
    def publish_some(self, first: set[int]) -> None:
        for i in sorted(first):
            self.publish(i)

    @rule(i=st.integers(0, TASKS - 1))
    def publish(self, i: int) -> None:
        """Intake accepts task i (again: a redelivered task message publishes it again)."""
        run(self.loop, publish_accepted(self.js, self._task(i)))
        self.published.add(i)

    # ---- the batcher ----

    @rule()
    def batcher_step(self) -> None:
        """One turn of the batcher's own loop: fetch, take, flush at the count, keep alive."""
        run(self.loop, self._step())

    async def _step(self) -> None:
        info = await self.js.consumer_info(subjects.STREAM_INTERNAL, subjects.DURABLE_BATCHER)
        if info.num_pending or info.num_ack_pending:  # else the fetch just waits for nothing
            await self.collector.step(self.psub)

    @precondition(lambda self: bool(self.collector.pending.items))
    @rule()
    def flush(self) -> None:
        run(self.loop, self.collector.flush("time"))

    @precondition(lambda self: bool(self.collector.pending.items))
    @rule(step=st.sampled_from(["intent", "create", "record"]))
    def crash_batcher_during_flush(self, step: str) -> None:
        """Kills the batcher as soon as its flush has reached `step`."""
        run(self.loop, self._crash_during_flush(step))

    async def _crash_during_flush(self, step: str) -> None:
        held = [item.msg for item in self.collector.pending.items]
        creates = len(self.emulator.state.creates())
        if step == "intent":  # the create is slow to start: the crash comes before it
            self.emulator.configure(faults=[{"operation": "create", "delay_seconds": 0.2}])
        reached: dict[str, Callable[[], Awaitable[bool]]] = {
            "intent": lambda: self._has_state("intent"),
            "create": lambda: _now(len(self.emulator.state.creates()) > creates),
            "record": lambda: self._has_state("submitted"),
        }
        flush = asyncio.create_task(self.collector.flush("time"))

        async def reached_or_done() -> bool:
            return flush.done() or await reached[step]()

        await until(reached_or_done, 5.0)
        flush.cancel()
        await asyncio.gather(flush, return_exceptions=True)
        self.emulator.configure(faults=[])
        await self._crash_batcher(held)

    async def _has_state(self, state: str) -> bool:
        return any(r.state == state for r in await self.records.all())

    @precondition(lambda self: bool(self.collector.pending.items))
    @rule()
    def redeliver_held(self) -> None:
        """The server gives up on messages the batcher still holds (a lost keep-alive) and
        delivers them again, while the batcher lives on with the old deliveries."""
        run(self.loop, _comes_back(self.nc, [i.msg for i in self.collector.pending.items]))

    @rule()
    def crash_batcher(self) -> None:
        run(self.loop, self._crash_batcher())

    @rule()
    def batcher_recovers(self) -> None:
        run(self.loop, self.collector.recover())

    # ---- the notifier (the poller's part: whether a batch has ended) ----

    async def _ended(self) -> list[BatchEnded]:
        ended = []
        for record in await self.records.all():
            if record.batch_id is None or record.state == "delivered":
                continue
            batch = await self.client.messages.batches.retrieve(record.batch_id)
            if batch.processing_status == "ended":
                ended.append(BatchEnded(intent_id=record.intent_id, batch_id=record.batch_id))
        return ended

    @rule()
    def deliver_results(self) -> None:
        run(self.loop, self._deliver_results())

    async def _deliver_results(self) -> None:
        for ended in await self._ended():
            await self.delivery.deliver(ended)

    @rule()
    def two_notifiers_race(self) -> None:
        """The same handoff reaches two notifiers at once (a redelivery mid-delivery)."""
        run(self.loop, self._race())

    async def _race(self) -> None:
        for ended in (await self._ended())[:1]:
            await asyncio.gather(self.delivery.deliver(ended),
                                 self.delivery.deliver(ended))

    @rule(stop_after=st.integers(0, 3))
    def notifier_dies_mid_delivery(self, stop_after: int) -> None:
        """A delivery cut off after a few results; its handoff comes back later."""
        run(self.loop, self._interrupted_delivery(stop_after))

    async def _interrupted_delivery(self, stop_after: int) -> None:
        for ended in (await self._ended())[:1]:
            before = await self._results()
            work = asyncio.create_task(self.delivery.deliver(ended))
            await until(lambda b=before, w=work: self._more_results(b, stop_after, w), 5.0)
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)

    async def _more_results(self, before: Counter[str], n: int, work: asyncio.Task[Any]) -> bool:
        return work.done() or sum((await self._results()).values()) - sum(before.values()) >= n

    # ---- the checks ----

    async def _results(self) -> Counter[str]:
        info = await self.js.stream_info(subjects.STREAM_RESULTS,
                                         subjects_filter=subjects.results_of(self.tenant))
        return Counter(info.state.subjects or {})

    def _submissions(self) -> Counter[str]:
        mine = {custom_id(self.tenant, f"task-{i}", a) for i in range(TASKS) for a in (1, 2, 3)}
        return Counter(r["custom_id"] for c in self.emulator.state.creates()
                       for r in c["requests"] if r["custom_id"] in mine)

    @invariant()
    def billed_at_most_once(self) -> None:
        assert [cid for cid, n in self._submissions().items() if n > 1] == []

    @invariant()
    def at_most_one_result_per_task(self) -> None:
        assert [s for s, n in run(self.loop, self._results()).items() if n > 1] == []

    async def _settle_and_check(self) -> None:
        """Lets everything run to its end, then checks each task's one result."""
        async def settled() -> bool:
            await self.collector.recover()
            await self._step()
            if self.collector.pending.items:
                await self.collector.flush("time")
            await self._deliver_results()
            return len(await self._results()) == len(self.published)

        if not await until(settled, SETTLE_BOUND):
            info = await self.js.consumer_info(subjects.STREAM_INTERNAL, subjects.DURABLE_BATCHER)
            raise AssertionError(f"not every task got its result: {await self._results()}, "
                                 f"{await self.records.all()}, {info.num_pending} pending, "
                                 f"{info.num_ack_pending} unacked, {self.emulator.state.creates()}")
        results = await self._results()
        assert set(results.values()) == {1} or not results
        sub = await self.js.subscribe(subjects.results_of(self.tenant), ordered_consumer=True)
        for _ in range(len(results)):
            result = json.loads((await sub.next_msg(timeout=5)).data)
            i = int(result["task_id"].removeprefix("task-"))
            assert result["status"] == OUTCOMES[self.outcome[i]], (self.outcome[i], result)
        await sub.unsubscribe()
        assert [cid for cid, n in self._submissions().items() if n > 1] == []


async def _comes_back(nc: Client, held: list[Msg]) -> None:
    """What the server does with unacknowledged messages once their ack wait has run out,
    without waiting for it: a NAK sent on the wire only, so the batcher's own Msg objects do
    not learn of it (an acked one stays acked; the server ignores the NAK)."""
    for msg in held:
        await nc.publish(msg.reply, b"-NAK")
    await nc.flush()


async def _now(value: bool) -> bool:
    return value


def test_billed_at_most_once_and_one_result_whatever_the_order(
        own_nats: NatsServer, fast_emulator: EmulatorHandle) -> None:
    Lifecycle.nats_url = own_nats.url
    Lifecycle.emulator = fast_emulator
    run_state_machine_as_test(Lifecycle, settings=settings(
        settings.default, max_examples=20, stateful_step_count=15))
