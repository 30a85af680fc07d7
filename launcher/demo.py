"""`make demo`: run batchbus end to end on this machine and print what it cost and saved.

Starts an embedded nats-server (unless NATS_URL answers), the Batch API emulator (unless
BATCHBUS_DEMO_API=real and ANTHROPIC_API_KEY are set), the four services; publishes 2,000
support tickets; follows them to their final results; prints a summary; stops everything.
"""

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import nats
import nats.errors
from nats.aio.msg import Msg

from batchbus.client import BatchbusClient
from batchbus.launcher.emulator import EmulatorProcess, start_emulator_process
from batchbus.launcher.nats_server import NatsServer, start_nats
from batchbus.launcher.services import Pipeline
from batchbus.launcher.workload import MODEL, malformed, tickets
from batchbus.shared import subjects
from batchbus.shared.connection import connect_options
from batchbus.shared.models import BatchEvent, Result
from batchbus.shared.pricing import default_prices
from batchbus.shared.settings import NatsSettings
from batchbus.shared.text import clip

TICKETS = int(os.environ.get("BATCHBUS_DEMO_TICKETS", "2000"))


@dataclass
class Tally:
    expected: int
    results: dict[str, Result] = field(default_factory=dict)
    submitted: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    drawn: float = 0.0

    def draw(self, final: bool = False) -> None:
        """A progress bar on a terminal, a line every few seconds in a log."""
        now = time.monotonic()
        tty = sys.stdout.isatty()
        if not final and now - self.drawn < (0.2 if tty else 3.0):
            return
        self.drawn = now
        done = len(self.results)
        bar = "#" * (30 * done // self.expected)
        line = (f"  [{bar:<30}] {done}/{self.expected} final results | batches submitted "
                f"{len(self.submitted)}, ended {len(self.ended)} | {now - self.started:5.1f}s")
        print("\r" + line if tty else line, end="\n" if final or not tty else "", flush=True)


async def nats_answers(url: str) -> bool:
    try:
        # One attempt: max_reconnect_attempts=0 would mean "retry for ever" to nats-py.
        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False,
                                max_reconnect_attempts=1, **connect_options(NatsSettings()))
    except (nats.errors.Error, OSError):
        return False
    await nc.close()
    return True


async def follow(url: str, tenant: str, expected: int) -> Tally:
    """Publishes the workload and waits for every final result, drawing progress."""
    tally = Tally(expected)
    events = await nats.connect(url, **connect_options(NatsSettings()))

    async def on_event(msg: Msg) -> None:
        event = BatchEvent.model_validate_json(msg.data)
        (tally.submitted if event.event == "submitted" else tally.ended
         if event.event == "ended" else set()).add(event.batch_id)

    await events.subscribe(subjects.BATCH_EVENTS, cb=on_event)
    async with BatchbusClient(url, tenant, nats_settings=NatsSettings()) as client:
        sent = await client.publish_many(tickets(TICKETS))
        for raw in malformed():
            await client.publish(raw)
        print(f"  published {sent} tickets and {len(malformed())} malformed tasks "
              f"(durable in JetStream)")
        async for result in client.results():
            tally.results[result.task_id] = result
            tally.draw()
            if len(tally.results) >= expected:
                break
    await events.close()
    tally.draw(final=True)
    return tally


def summary(tally: Tally, elapsed: float) -> str:
    results = list(tally.results.values())
    statuses = Counter(r.status for r in results)
    costs = [r.cost for r in results if r.cost is not None]
    realtime = sum((Decimal(str(c.realtime_usd)) for c in costs), Decimal(0))
    batch = sum((Decimal(str(c.batch_usd)) for c in costs), Decimal(0))
    tokens_in = sum(r.usage.input_tokens for r in results if r.usage)
    tokens_out = sum(r.usage.output_tokens for r in results if r.usage)
    retried = sum(1 for r in results if r.attempts > 1)
    rates = default_prices().rates(MODEL) or {}
    lines = [
        "", "batchbus demo — summary",
        f"  tasks            {len(results)} final results in {elapsed:.1f}s, "
        f"{len(tally.submitted)} batches",
        "  by status        " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
        f"  retried          {retried} tasks succeeded on a later attempt after a transient error",
        f"  tokens           {tokens_in:,} input, {tokens_out:,} output ({MODEL}: "
        f"${rates.get('input')} / ${rates.get('output')} per MTok in / out at real-time prices)",
        f"  real-time cost   ${realtime:.4f}",
        f"  batch cost       ${batch:.4f}",
        f"  saved            ${realtime - batch:.4f} "
        f"({(realtime - batch) / realtime:.0%} of the real-time price)" if realtime else "",
    ]
    rejected = [r for r in results if r.status == "rejected"]
    if rejected:
        lines.append("  rejections       " + "; ".join(
            f"{r.task_id}: {clip(r.error.message, 70)}" for r in rejected[:4] if r.error))
    return "\n".join(line for line in lines if line)


async def run() -> int:
    started = time.monotonic()
    stack: list[NatsServer | EmulatorProcess | Pipeline] = []
    workdir = Path(tempfile.mkdtemp(prefix="batchbus-demo-"))
    finished = False
    try:
        url = os.environ.get("NATS_URL", "")
        if url and await nats_answers(url):
            print(f"  using the NATS server at {url}")
        else:
            server = start_nats(str(workdir / "nats"))
            stack.append(server)
            url = server.url
            print(f"  started an embedded nats-server with JetStream at {url}")
        # Small batches and short waits, so a few minutes show every stage; the services'
        # defaults suit batches that take the real API minutes to hours.
        env = {"NATS_URL": url, "BATCHER_MAX_REQUESTS": "500", "BATCHER_MAX_WAIT_SECONDS": "2",
               "POLLER_INTERVAL_SECONDS": "1", "POLLER_MAX_INTERVAL_SECONDS": "2",
               "NOTIFIER_RETRY_DELAY_SECONDS": "2"}
        if os.environ.get("BATCHBUS_DEMO_API") == "real" and os.environ.get("ANTHROPIC_API_KEY"):
            env["ANTHROPIC_BASE_URL"] = "https://api.anthropic.com"
            env.pop("POLLER_INTERVAL_SECONDS"), env.pop("POLLER_MAX_INTERVAL_SECONDS")
            print("  using the real Anthropic API (this costs money; batches take minutes)")
        else:
            emulator = start_emulator_process(processing_seconds=3.0)
            stack.append(emulator)
            env |= {"ANTHROPIC_BASE_URL": emulator.url, "ANTHROPIC_API_KEY": "sk-demo-emulator"}
            print(f"  started the Batch API emulator at {emulator.url}")
        pipeline = Pipeline(env, workdir / "logs")
        stack.append(pipeline)
        pipeline.start()
        print("  started intake, batcher, poller, notifier; metrics at " + ", ".join(
            s.metrics_url for s in pipeline.services.values()))
        print(f"  logs in {workdir / 'logs'} (removed at the end, kept if the demo fails)")
        tenant = f"demo-{int(time.time())}"
        tally = await follow(url, tenant, TICKETS + len(malformed()))
        print(summary(tally, time.monotonic() - started))
        finished = True
        return 0
    finally:
        for part in reversed(stack):
            part.stop()
        print("  stopped everything the demo started")
        remove_unless(finished, workdir)


def remove_unless(finished: bool, workdir: Path) -> None:
    """The run's folder (JetStream store, logs) goes with the run; after a failure its logs
    stay, and the path is said."""
    if finished:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"  kept the logs and the JetStream store in {workdir}")


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
