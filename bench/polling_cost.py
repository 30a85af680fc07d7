"""Polling cost: API calls per batch for batches of 1 minute, 10 minutes and 1 hour.

    .venv/bin/python -m bench.polling_cost [--real-seconds 20]

Time is scaled: each batch really takes --real-seconds in the emulator, and the poller's
floor (10 s) and ceiling (300 s) are scaled by the same factor, so the schedule is the one a
batch of the named length would get. Three batches run one after another per length: the
first with no history, the others with the poller's learned completion time.
"""

import argparse
import asyncio
import time
from datetime import UTC, datetime

import nats

from batchbus.client import BatchbusClient
from batchbus.shared import subjects
from batchbus.shared.models import BatchEvent
from bench.common import emit, stack
from tests.integration.helpers import gather_results, metric_total, ticket

FLOOR, CEILING = 10.0, 300.0


def poll_calls(metrics_url: str) -> float:
    return metric_total(metrics_url, "batchbus_poll_calls_total")


async def one_length(length: float, real: float) -> list[tuple[float, float]]:
    """(polls, scaled seconds from the batch's end to the poller noticing) per batch."""
    scale = real / length
    rows = []
    with stack(processing_seconds=real, POLLER_INTERVAL_SECONDS=str(FLOOR * scale),
               POLLER_MAX_INTERVAL_SECONDS=str(CEILING * scale),
               BATCHER_MAX_WAIT_SECONDS="0.2") as s:
        url = s.pipeline.services["poller"].metrics_url
        nc = await nats.connect(s.nats.url)
        lags: list[float] = []

        async def on_event(msg: nats.aio.msg.Msg) -> None:
            event = BatchEvent.model_validate_json(msg.data)
            if event.event == "ended" and event.ended_at:
                lags.append((datetime.now(UTC) - event.ended_at).total_seconds() / scale)

        await nc.subscribe(subjects.BATCH_EVENTS, cb=on_event)
        for n in range(3):
            before = await asyncio.to_thread(poll_calls, url)
            async with BatchbusClient(s.nats.url, f"bench-{n}") as client:
                await client.publish_many(ticket(i) for i in range(10))
                await gather_results(client, 10, timeout=real * 3 + 60)
            polls = await asyncio.to_thread(poll_calls, url) - before
            rows.append((polls, lags[-1] if lags else float("nan")))
        await nc.close()
    return rows


async def main(real: float) -> None:
    print(f"{'batch length':>12} {'polls 1st':>10} {'polls 2nd':>10} {'polls 3rd':>10} "
          f"{'max lag after end (s, scaled)':>30}")
    figures: dict[str, float] = {}
    for length, name in ((60.0, "1 minute"), (600.0, "10 minutes"), (3600.0, "1 hour")):
        started = time.monotonic()
        rows = await one_length(length, real)
        polls = " ".join(f"{p:>10.0f}" for p, _ in rows)
        print(f"{name:>12} {polls} {max(lag for _, lag in rows):>30.0f}"
              f"   ({time.monotonic() - started:.0f}s real)")
        key = name.replace(" ", "_")
        figures[f"polls_{key}_first"] = rows[0][0]
        figures[f"polls_{key}_max"] = max(p for p, _ in rows)
        figures[f"lag_s_{key}_max"] = max(lag for _, lag in rows)
    emit(figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--real-seconds", type=float, default=20.0)
    asyncio.run(main(parser.parse_args().real_seconds))
