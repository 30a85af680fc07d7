"""A Jepsen-style history of one tenant's run and the checker of batchbus's promises.

The history holds every publish attempt with its PubAck (or none: outcome unknown), every
batch create the API saw, and every final result stored (duplicates kept). `check` turns it
into counts and violations; a run keeps its promises when `Verdict.ok`.
"""

import asyncio
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from batchbus.client import replay
from batchbus.emulator.server import EmulatorHandle
from batchbus.services.batcher.batching import custom_id
from batchbus.shared import subjects
from batchbus.shared.settings import NatsSettings
from batchbus.shared.streams import batch_records

# The errors a publish raises when its outcome is unknown (server gone, no ack in time).
UNKNOWN_OUTCOME = (nats.errors.Error, TimeoutError, ConnectionError)


@dataclass(frozen=True)
class Publish:
    """One publish attempt of a task; `seq` is its PubAck's stream sequence, None if no ack came."""

    task_id: str
    seq: int | None


@dataclass(frozen=True)
class Create:
    """One batch create the API accepted: its custom_ids (task attempts) in order."""

    batch_id: str
    custom_ids: tuple[str, ...]


@dataclass(frozen=True)
class Stored:
    """One final result as the results stream keeps it."""

    task_id: str
    status: str
    attempts: int
    error: str | None = None  # the error type of a result that did not succeed


@dataclass
class History:
    tenant: str
    publishes: list[Publish] = field(default_factory=list)
    creates: list[Create] = field(default_factory=list)
    results: list[Stored] = field(default_factory=list)


@dataclass
class Verdict:
    tasks: int  # distinct task ids published (acked or not)
    acked: int  # tasks with at least one PubAck
    unknown: int  # tasks never acked: the publish outcome is unknown
    unacked_attempts: int  # publish attempts that got no PubAck (retried, or left unknown)
    recovered: int  # unknown tasks that got a result anyway (the publish was stored)
    creates: int  # creates holding at least one of the tenant's requests
    submitted: int  # the tenant's requests over all creates
    results: int  # final results stored, duplicates included
    statuses: dict[str, int]  # first result's status -> tasks
    lost: list[str]  # acked, but no final result
    duplicated: dict[str, int]  # task -> final results stored, where more than one
    double_billed: dict[str, list[str]]  # custom_id -> the batches it was in, if more than one
    after_success: list[str]  # custom_ids submitted after their task's success
    unbilled_success: list[str]  # succeeded tasks whose succeeding attempt was never created
    unexpected: list[str]  # results for task ids never published

    @property
    def violations(self) -> dict[str, object]:
        found: dict[str, list[str] | dict[str, Any]] = {"lost": self.lost, "duplicated": self.duplicated,
                 "double_billed": self.double_billed, "after_success": self.after_success,
                 "unbilled_success": self.unbilled_success, "unexpected": self.unexpected}
        return {name: _sample(v) for name, v in found.items() if v}

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        return (f"tasks={self.tasks} acked={self.acked} unacked_attempts={self.unacked_attempts} "
                f"unknown={self.unknown} "
                f"recovered={self.recovered} creates={self.creates} submitted={self.submitted} "
                f"results={self.results} statuses={dict(sorted(self.statuses.items()))} "
                f"lost={len(self.lost)} duplicated={len(self.duplicated)} "
                f"double_billed={len(self.double_billed)} after_success={len(self.after_success)} "
                f"unbilled_success={len(self.unbilled_success)} unexpected={len(self.unexpected)}")


def check(history: History) -> Verdict:
    """Checks the promises: lost = 0, one final result per task, each task attempt in at most
    one create, and no attempt of a task created after the attempt that succeeded."""
    published = {p.task_id for p in history.publishes}
    acked = {p.task_id for p in history.publishes if p.seq is not None}
    by_prefix = {_prefix(custom_id(history.tenant, t, 1)): t for t in published}
    # Creates of other tenants (tests share the emulator) are not this history's business.
    ours = [(c, [cid for cid in c.custom_ids if _prefix(cid) in by_prefix])
            for c in history.creates]
    ours = [(c, cids) for c, cids in ours if cids]
    billed = Counter(cid for _, cids in ours for cid in cids)
    batches: dict[str, list[str]] = {}
    for c, cids in ours:
        for cid in cids:
            batches.setdefault(cid, []).append(c.batch_id)
    results = Counter(r.task_id for r in history.results)
    first: dict[str, Stored] = {}
    for r in history.results:
        first.setdefault(r.task_id, r)
    after_success = sorted(
        cid for cid in billed
        if (won := first.get(by_prefix[_prefix(cid)])) is not None and won.status == "succeeded"
        and _attempt(cid) > won.attempts)
    unbilled = sorted(t for t, r in first.items() if r.status == "succeeded"
                      and billed[custom_id(history.tenant, t, r.attempts)] == 0)
    return Verdict(
        tasks=len(published), acked=len(acked), unknown=len(published - acked),
        unacked_attempts=sum(p.seq is None for p in history.publishes),
        recovered=len((published - acked) & results.keys()), creates=len(ours),
        submitted=sum(billed.values()), results=len(history.results),
        statuses=dict(Counter(r.status for r in first.values())),
        lost=sorted(acked - results.keys()),
        duplicated={t: n for t, n in sorted(results.items()) if n > 1},
        double_billed={cid: batches[cid] for cid, n in sorted(billed.items()) if n > 1},
        after_success=after_success, unbilled_success=unbilled,
        unexpected=sorted(results.keys() - published))


class Recorder:
    """Publishes tasks through JetStream and records each attempt with its PubAck."""

    def __init__(self, nc: Client, history: History, ack_timeout: float = 5.0) -> None:
        self.js = nc.jetstream(timeout=ack_timeout)
        self.history = history

    async def publish(self, task: dict[str, Any]) -> bool:
        """One attempt; True once JetStream acknowledged it, False if the outcome is unknown."""
        task_id = str(task["task_id"])
        try:
            ack = await self.js.publish(subjects.tasks(self.history.tenant),
                                        _encode(task), stream=subjects.STREAM_TASKS)
        except UNKNOWN_OUTCOME:
            self.history.publishes.append(Publish(task_id, None))
            return False
        self.history.publishes.append(Publish(task_id, ack.seq))
        return True

    async def publish_all(self, tasks: Iterable[dict[str, Any]], window: int = 128,
                          retry_for: float = 60.0) -> None:
        """Publishes each task until acked (a retry is deduplicated by task id), `window` at
        a time; gives up on a task after `retry_for` seconds, leaving it unknown."""
        loop = asyncio.get_running_loop()

        async def until_acked(task: dict[str, Any]) -> None:
            deadline = loop.time() + retry_for
            while not await self.publish(task) and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)  # the server is away; try again shortly

        pending: set[asyncio.Task[None]] = set()
        for task in tasks:
            pending.add(asyncio.create_task(until_acked(task)))
            if len(pending) >= window:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if pending:
            await asyncio.wait(pending)


def creates_seen(emulator: EmulatorHandle) -> list[Create]:
    return [Create(c["batch_id"], tuple(r["custom_id"] for r in c["requests"]))
            for c in emulator.state.creates()]


async def stored_results(url: str, tenant: str) -> list[Stored]:
    """Every result the results stream holds for `tenant`, a duplicate as often as stored."""
    nc = await nats.connect(url)
    try:
        return [Stored(r.task_id, r.status, r.attempts, r.error.type if r.error else None)
                async for r in replay(nc.jetstream(), subjects.results_of(tenant))]
    finally:
        await nc.close()


async def record(history: History, url: str, emulator: EmulatorHandle) -> History:
    """Completes `history` with the creates the emulator saw and the results stored."""
    history.creates = creates_seen(emulator)
    history.results = await stored_results(url, history.tenant)
    return history


async def wait_for_results(nc: Client, tenant: str, task_ids: Iterable[str],
                           timeout: float) -> bool:
    """Waits until each of `task_ids` has a stored result; False if `timeout` ran out first
    (the checker then names the lost ones). Rides out a NATS restart on a reconnecting `nc`."""
    missing = {subjects.results(tenant, t) for t in task_ids}
    js = nc.jetstream()
    try:
        async with asyncio.timeout(timeout):
            while missing:
                try:
                    info = await js.stream_info(subjects.STREAM_RESULTS,
                                                subjects_filter=subjects.results_of(tenant))
                    missing -= set(info.state.subjects or {})
                except UNKNOWN_OUTCOME:
                    pass  # the server is away; ask again
                if missing:
                    await asyncio.sleep(0.2)
    except TimeoutError:
        return False
    return True


async def wait_until_quiet(url: str, timeout: float) -> bool:
    """Waits until batchbus has nothing in flight: its durable consumers have no message
    pending or unacknowledged and every batch record is retired, so any duplicate a late
    redelivery could cause is stored by then. False if `timeout` ran out first; what was
    still in flight is printed then."""
    nc = await nats.connect(url)
    busy: str | None = "not asked yet"
    try:
        async with asyncio.timeout(timeout):
            while (busy := await _busy(nc)) is not None:  # noqa: ASYNC110 - polls NATS state with a bound
                await asyncio.sleep(0.2)
    except TimeoutError:
        print(f"not quiet after {timeout:.0f} s: {busy}")
        return False
    finally:
        await nc.close()
    return True


async def _busy(nc: Client) -> str | None:
    """What is still in flight, or None."""
    js = nc.jetstream()
    durables = [(subjects.STREAM_TASKS, subjects.DURABLE_INTAKE),
                (subjects.STREAM_INTERNAL, subjects.DURABLE_BATCHER),
                (subjects.STREAM_INTERNAL, subjects.DURABLE_NOTIFIER)]
    try:
        for stream, durable in durables:
            info = await js.consumer_info(stream, durable)
            if info.num_pending or info.num_ack_pending:
                return (f"consumer {durable}: {info.num_pending} pending, "
                        f"{info.num_ack_pending} unacknowledged")
        records = await batch_records(js, NatsSettings(url=""))
        live = await records.all()
        return (f"{len(live)} batch record(s) live: "
                + ", ".join(f"{r.batch_id} {r.state}/acked={r.acked}" for r in live[:5])
                ) if live else None
    except (NotFoundError, nats.errors.Error, TimeoutError) as exc:
        return f"NATS not answering ({exc!r})"  # not there yet, or the server is coming back


def _encode(task: dict[str, Any]) -> bytes:
    return json.dumps(task).encode()


def _prefix(cid: str) -> str:
    return cid.rpartition("-a")[0]


def _attempt(cid: str) -> int:
    return int(cid.rpartition("-a")[2])


def _sample(found: list[str] | dict[str, Any], limit: int = 5) -> object:
    """A violation as a count and a few examples, so a failure message stays readable."""
    items = list(found.items()) if isinstance(found, dict) else found
    return {"count": len(items), "examples": items[:limit]}
