"""Budget reservations per second on one tenant's day, from one and from two replicas.

    .venv/bin/python -m bench.budget_reservations [--tasks 2000]

Each reservation is what intake does for a budgeted task: the day's total by compare-and-set
(changes that queue up are written together) and the task's marker key. The two "replicas"
are two connections with a Budgets each, contending for the same key.
"""

import argparse
import asyncio
import tempfile
import time
from datetime import date
from decimal import Decimal

import nats

from batchbus.launcher.nats_server import start_nats
from batchbus.shared import streams
from batchbus.shared.budgets import Budgets
from batchbus.shared.settings import NatsSettings

DAY, CENT, BUDGET = date(2026, 1, 1), Decimal("0.01"), Decimal(10**9)


async def run(url: str, tasks: int) -> None:
    connections = [await nats.connect(url) for _ in range(2)]
    try:
        replicas = [Budgets(await streams.budgets_bucket(nc.jetstream(), NatsSettings(url=url)))
                    for nc in connections]
        for tenant, used in (("one", replicas[:1]), ("two", replicas)):
            started = time.perf_counter()
            held = await asyncio.gather(*(
                used[i % len(used)].reserve(tenant, f"task-{i}", DAY, CENT, BUDGET, False)
                for i in range(tasks)))
            elapsed = time.perf_counter() - started
            assert all(h.reservation is not None for h in held)
            total = await replicas[0].total(tenant, DAY)
            assert total == CENT * tasks, total  # no update lost
            print(f"{len(used)} replica(s): {tasks} reservations in {elapsed:.2f} s "
                  f"({tasks / elapsed:,.0f}/s), total ${total}")
    finally:
        for nc in connections:
            await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    args = parser.parse_args()
    server = start_nats(tempfile.mkdtemp(prefix="batchbus-bench-"))
    try:
        asyncio.run(run(server.url, args.tasks))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
