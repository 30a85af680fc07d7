"""Helpers for integration tests: make tasks, gather results with a bound."""

import asyncio
import urllib.request
from collections import Counter
from typing import Any

import nats

from batchbus.client import BatchbusClient
from batchbus.emulator.server import EmulatorHandle
from batchbus.services.batcher.batching import custom_id
from batchbus.shared import subjects
from batchbus.shared.models import Result

MODEL = "claude-sonnet-4-6"


def ticket(i: int, **params: Any) -> dict[str, Any]:
    return {"task_id": f"ticket-{i:05d}",
            "params": {"model": MODEL, "max_tokens": 64,
                       "system": "Classify the support ticket: billing, shipping or other.",
                       "messages": [{"role": "user", "content": f"Ticket {i}: my parcel is late"}],
                       **params},
            "metadata": {"ticket": i}}


async def gather_results(client: BatchbusClient, expected: int,
                         timeout: float = 60.0) -> dict[str, list[Result]]:
    """Reads the tenant's stored results until `expected` tasks have one, within `timeout`.

    Every stored result is kept, so a duplicate shows up as a list longer than one.
    """
    by_task: dict[str, list[Result]] = {}

    async def read() -> None:
        async for result in client.results():
            by_task.setdefault(result.task_id, []).append(result)
            if len(by_task) >= expected:
                return

    await asyncio.wait_for(read(), timeout)
    return by_task


async def results_of(url: str, tenant: str, tasks: list[dict[str, Any]],
                     timeout: float = 60.0) -> dict[str, Result]:
    """Publishes `tasks` and returns each one's final result, checking there is only one."""
    async with BatchbusClient(url, tenant) as client:
        await client.publish_many(tasks)
        found = await gather_results(client, len(tasks), timeout)
    assert all(len(r) == 1 for r in found.values())
    return {name: results[0] for name, results in found.items()}


def submissions(emulator: EmulatorHandle) -> Counter[str]:
    """How many batch creates each custom_id (task attempt) reached the API in."""
    return Counter(r["custom_id"] for c in emulator.state.creates() for r in c["requests"])


def assert_submitted_once(emulator: EmulatorHandle, tenant: str | None = None,
                          task_ids: list[str] | None = None) -> None:
    """No task attempt in two creates; with `task_ids`, each first attempt in exactly one."""
    seen = submissions(emulator)
    assert [cid for cid, n in seen.items() if n > 1] == []
    if tenant is not None and task_ids is not None:
        assert all(seen[custom_id(tenant, t, 1)] == 1 for t in task_ids)


async def stored_count(url: str, subject: str, stream: str = subjects.STREAM_RESULTS) -> int:
    """How many messages `stream` keeps on `subject` (a duplicate would count twice)."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(stream, subjects_filter=subject)
        return sum((info.state.subjects or {}).values())
    finally:
        await nc.close()


def metric_total(metrics_url: str, name: str) -> float:
    """The sum over all label sets of one series on a service's /metrics."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")
