"""Intake alone: tasks/s validated, claimed and passed on, against the one-hop baseline.

    .venv/bin/python -m bench.intake_alone [--tasks 20000] [--profile SECONDS]

Only nats-server and the intake service run. N tasks of about 1 KB are published with
publish_async to batchbus.tasks.<tenant> while intake consumes them; the rate is N over
the time from the first publish until N accepted tasks are stored for the batcher. The
baseline is one hop of N messages of the same size on the same server (bench/one_hop.py).
With --backlog, the tasks are all stored before intake starts (its drain rate, each fetch
full). With --profile, py-spy records intake for that many seconds (raw folded stacks in /tmp).
"""

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import nats

from batchbus.launcher.nats_server import start_nats
from batchbus.launcher.services import Pipeline
from batchbus.shared import gc_tuning, subjects
from bench.common import cpu_seconds, emit, profile
from bench.one_hop import describe, one_hop, publish_all
from bench.throughput import task

DEADLINE = 600.0  # seconds for N tasks to pass intake


async def accepted(js: nats.js.JetStreamContext) -> int:
    info = await js.stream_info(subjects.STREAM_INTERNAL, subjects_filter=subjects.ACCEPTED_ALL)
    return sum((info.state.subjects or {}).values())


async def wait_accepted(js: nats.js.JetStreamContext, n: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while await accepted(js) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"intake passed fewer than {n} tasks in {DEADLINE}s")
        await asyncio.sleep(0.02)  # poll interval of the stored count


async def measure(n: int, profile_seconds: int = 0, backlog: bool = False) -> dict[str, float]:
    bodies = [task(i) for i in range(n)]
    workdir = Path(tempfile.mkdtemp(prefix="batchbus-bench-"))
    server = start_nats(str(workdir / "nats"))
    pipeline = Pipeline({"NATS_URL": server.url}, workdir / "logs")
    pipeline.log_dir.mkdir()
    try:
        baseline = await one_hop(server.url, n, len(bodies[0]))
        intake = pipeline.add("intake", "intake")
        intake.wait_ready()
        assert intake.process is not None
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        if backlog:  # intake's consumer exists, so it is stopped and its tasks wait
            intake.stop()
            await publish_all(js, subjects.tasks("bench"), bodies)
            intake.start()
            intake.wait_ready()
        assert intake.process is not None
        spy = profile(intake.process.pid, profile_seconds, "intake") if profile_seconds else None
        cpu = cpu_seconds(intake.process.pid)
        started = time.perf_counter()
        if not backlog:
            await publish_all(js, subjects.tasks("bench"), bodies)
        await wait_accepted(js, n)
        rate = n / (time.perf_counter() - started)
        used = (cpu_seconds(intake.process.pid) - cpu) / n * 1e6
        await nc.close()
        if spy is not None:
            spy.wait(timeout=profile_seconds + 30)
    finally:
        pipeline.stop()
        server.stop()
    print(f"N={n} tasks of {len(bodies[0])} bytes")
    print(f"  baseline: {describe(baseline)}")
    print(f"  intake {rate:,.0f} tasks/s   ratio to one hop {rate / baseline.hop:.3f}   "
          f"CPU {used:.0f} µs per task")
    return {"tasks": n, "one_hop": baseline.hop, "intake": rate, "ratio": rate / baseline.hop,
            "cpu_us_intake": used}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS")
    parser.add_argument("--backlog", action="store_true",
                        help="publish every task first, then time intake draining them")
    args = parser.parse_args()
    gc_tuning.tune()  # as in bench/throughput.py: this process holds every task body
    emit(asyncio.run(measure(args.tasks, args.profile, args.backlog)))
