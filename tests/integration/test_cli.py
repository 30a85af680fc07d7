"""`batchbus` end to end against real NATS, the four services and the emulator."""

import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import nats
import pytest
from typer.testing import CliRunner
from typer.testing import Result as Invocation

from batchbus.cli.main import app
from batchbus.cli.tally import usd_text
from batchbus.client import BatchbusClient
from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer, start_nats
from batchbus.launcher.services import Pipeline
from batchbus.services.batcher.batching import custom_id
from batchbus.shared import subjects
from batchbus.shared.models import BatchEvent, Result
from tests.integration.helpers import assert_submitted_once, ticket

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.nats

runner = CliRunner()
BODY = {"model": "claude-sonnet-4-6", "max_tokens": 32,
        "messages": [{"role": "user", "content": "Is my parcel lost?"}]}
FAILS = {"metadata": {"user_id": "emulate:errored:invalid_request_error"}}


def batchbus(url: str, *argv: str) -> Invocation:
    return runner.invoke(app, [*argv, "--nats", url])


def history(url: str, tenant: str) -> list[Result]:
    async def read() -> list[Result]:
        async with BatchbusClient(url, tenant) as client:
            return [r async for r in client.history()]
    return asyncio.run(read())


@pytest.fixture
def tasks_file(tmp_path: Path) -> Path:
    """Two Task lines, two bare bodies, one task the emulator fails for good and one that asks
    for the real-time route."""
    path = tmp_path / "support.jsonl"
    lines = [ticket(1), BODY, ticket(2), {**BODY, "max_tokens": 33},
             ticket(3, **FAILS), {**ticket(4), "route": "realtime"}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_submit_follow_summarises_and_exits_nonzero_when_a_task_failed(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer, tenant: str,
        tasks_file: Path) -> None:
    done = batchbus(nats_server.url, "submit", str(tasks_file), "--tenant", tenant, "--follow")
    assert done.exit_code == 1, done.output
    out = done.stdout
    assert f"6 tasks of tenant {tenant} from support.jsonl" in out
    assert "by status      errored 1, succeeded 5" in out
    assert "by route       batch 5, realtime 1" in out
    assert re.search(r"ticket-00003 +errored +invalid_request_error", out)
    # One call at full price: less than half saved.
    assert re.search(r"saved +\$0\.\d+ \((4\d|3\d)%\)", out)
    assert "6/6" in done.stderr  # the progress bar's last state
    results = {r.task_id: r for r in history(nats_server.url, tenant)}
    bare = [r for r in results.values() if r.task_id.startswith("support-")]
    assert sorted(r.metadata["line"] for r in bare) == [2, 4]
    assert all(r.status == "succeeded" and r.metadata["source"] == "support.jsonl" for r in bare)


def test_the_same_file_again_is_deduplicated_not_paid_twice(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer, tenant: str,
        tasks_file: Path) -> None:
    first = batchbus(nats_server.url, "submit", str(tasks_file), "--tenant", tenant, "--follow")
    again = batchbus(nats_server.url, "submit", str(tasks_file), "--tenant", tenant, "--follow")
    assert first.exit_code == again.exit_code == 1
    assert first.stdout == again.stdout  # same results, same summary
    # Published once more without --follow: intake drops every copy as a duplicate.
    plain = batchbus(nats_server.url, "submit", str(tasks_file), "--tenant", tenant)
    assert plain.exit_code == 0 and f"published 6 tasks to {subjects.tasks(tenant)}" in plain.stdout
    asyncio.run(intake_caught_up(nats_server.url))
    task_ids = [r.task_id for r in history(nats_server.url, tenant)]
    assert len(task_ids) == len(set(task_ids)) == 6
    # The real-time task is in no batch.
    assert_submitted_once(emulator, tenant, [t for t in task_ids if t != "ticket-00004"])


async def intake_caught_up(url: str, timeout: float = 30.0) -> None:
    """Waits (bounded) until intake has read and acknowledged every task message."""
    nc = await nats.connect(url)
    try:
        async with asyncio.timeout(timeout):
            while True:
                info = await nc.jetstream().consumer_info(subjects.STREAM_TASKS,
                                                          subjects.DURABLE_INTAKE)
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    return
                await asyncio.sleep(0.05)  # polls the consumer's state
    finally:
        await nc.close()


def test_results_replays_stored_results_since_a_time(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str, tmp_path: Path) -> None:
    async def two_waves() -> datetime:
        async with BatchbusClient(nats_server.url, tenant) as client:
            [r async for r in client.submit_many([ticket(1), ticket(2)])]
            between = datetime.now(UTC)  # the server's clock: it runs on this machine
            [r async for r in client.submit_many([ticket(3), ticket(4)])]
        return between

    between = asyncio.run(asyncio.wait_for(two_waves(), 60))
    out = tmp_path / "all.jsonl"
    everything = batchbus(nats_server.url, "results", "--tenant", tenant, "--since", "1h",
                          "--out", str(out))
    assert everything.exit_code == 0 and "wrote 4 results" in everything.stderr
    stored = [Result.model_validate_json(line) for line in out.read_text().splitlines()]
    # Oldest first: each wave's results (in any order within it) before the next wave's.
    assert [sorted(r.task_id for r in wave) for wave in (stored[:2], stored[2:])] == \
        [["ticket-00001", "ticket-00002"], ["ticket-00003", "ticket-00004"]]

    later = batchbus(nats_server.url, "results", "--tenant", tenant,
                     "--since", between.isoformat(), "--out", "-")
    assert later.exit_code == 0
    ids = [json.loads(line)["task_id"] for line in later.stdout.splitlines()]
    assert sorted(ids) == ["ticket-00003", "ticket-00004"]

    table = batchbus(nats_server.url, "results", "--tenant", tenant)
    assert table.exit_code == 0 and "4 results" in table.stdout and "ticket-00004" in table.stdout
    none = batchbus(nats_server.url, "results", "--tenant", "t" + uuid.uuid4().hex[:12],
                    "--out", "-")
    assert none.exit_code == 0 and none.stdout == ""  # nothing stored: ends at once


def test_cost_sums_equal_the_results_cost_fields(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str) -> None:
    tasks = [ticket(i) for i in range(6)] + \
        [{**ticket(9), "params": {**ticket(9)["params"], "model": "claude-haiku-4-5"}}]

    async def run() -> list[Result]:
        async with BatchbusClient(nats_server.url, tenant) as client:
            return [r async for r in client.submit_many(tasks)]

    results = asyncio.run(asyncio.wait_for(run(), 60))
    done = batchbus(nats_server.url, "cost", "--tenant", tenant, "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    for model in ("claude-sonnet-4-6", "claude-haiku-4-5"):
        mine = [r for r in results if r.message and r.message["model"] == model]
        assert mine and report["models"][model]["results"] == len(mine)
        for field in ("batch_usd", "realtime_usd", "saved_usd"):
            expected = sum((Decimal(str(getattr(r.cost, field))) for r in mine if r.cost),
                           Decimal(0))
            # The exact sum, as a decimal string with USD_PLACES places.
            assert report["models"][model][field] == usd_text(expected), (model, field)
    total = report["total"]
    assert Decimal(total["batch_usd"]) * 2 == Decimal(total["realtime_usd"])
    assert total["input_tokens"] == sum(r.usage.input_tokens for r in results if r.usage)

    table = batchbus(nats_server.url, "cost", "--since", "1d")  # every tenant
    assert table.exit_code == 0 and "claude-haiku-4-5" in table.stdout
    assert "all tenants" in table.stdout


def test_status_shows_a_batch_in_flight(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    emulator.configure(processing_seconds=5.0)
    try:
        asyncio.run(publish_and_wait_for_record(nats_server.url, tenant, emulator))
        done = batchbus(nats_server.url, "status", "--json")
        assert done.exit_code == 0, done.output
        batches = json.loads(done.stdout)["batches"]
        mine = [b for b in batches if b["batch_id"] in batch_ids_of(emulator, tenant)]
        assert mine and mine[0]["requests"] >= 2 and mine[0]["age_seconds"] >= 0
        assert mine[0]["state"] in ("submitted", "ended", "delivered")
        table = batchbus(nats_server.url, "status")
        assert table.exit_code == 0 and mine[0]["batch_id"] in table.stdout
        assert "tasks waiting:" in table.stdout
    finally:
        emulator.configure(processing_seconds=0.5)


async def publish_and_wait_for_record(url: str, tenant: str, emulator: EmulatorHandle) -> None:
    """Publishes two tasks and waits (bounded) for the `submitted` event of their batch on the
    tenant's own event subject: the batcher announces a batch once its record is written."""
    async with BatchbusClient(url, tenant) as client:
        events = await client.nc.subscribe(subjects.events_of(tenant))
        await client.publish_many([ticket(1), ticket(2)])
        async with asyncio.timeout(30):
            while True:
                event = BatchEvent.model_validate_json((await events.next_msg(timeout=30)).data)
                if event.event == "submitted" and event.batch_id in batch_ids_of(emulator, tenant):
                    return


def batch_ids_of(emulator: EmulatorHandle, tenant: str) -> set[str]:
    """The batches that carry this tenant's first ticket (the emulator saw their creates)."""
    wanted = custom_id(tenant, "ticket-00001", 1)
    return {c["batch_id"] for c in emulator.state.creates()
            if any(r["custom_id"] == wanted for r in c["requests"])}


def test_an_unreachable_nats_is_a_clear_error_within_seconds() -> None:
    started = time.monotonic()
    done = batchbus("nats://127.0.0.1:1", "status")
    assert done.exit_code == 2
    assert "cannot reach NATS at nats://127.0.0.1:1" in done.stderr
    assert "Traceback" not in done.output
    assert time.monotonic() - started < 15


def test_a_server_without_batchbus_streams_is_a_clear_error(tmp_path: Path) -> None:
    bare = start_nats(str(tmp_path / "bare"))
    try:
        done = batchbus(bare.url, "results", "--tenant", "acme")
        assert done.exit_code == 2
        assert done.stderr.startswith(f"error: stream BATCHBUS_RESULTS not found on NATS at "
                                      f"{bare.url}: the batchbus services have not run")
        status = batchbus(bare.url, "status")
        assert status.exit_code == 2
        assert f"batchbus state (KV bucket batches) not found on NATS at {bare.url}" \
            in status.stderr
        # Given with --nats, so starting `batchbus up` is not the advice: the server is.
        assert "--nats names it: point it at the server batchbus runs on" in status.stderr
        assert len(status.stderr.splitlines()) == 1
    finally:
        bare.stop()


@pytest.fixture
def marker() -> str:
    return f"batchbus-up-test-{uuid.uuid4().hex}"


def processes_with(marker: str) -> list[int]:
    """PIDs whose environment carries `marker` (every child of `batchbus up` inherits it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if marker.encode() in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def lines_until(process: subprocess.Popen[str], text: str, timeout: float) -> Iterator[str]:
    """The process's output lines up to one containing `text`, within `timeout`."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        if line is None:
            raise AssertionError(f"output ended before {text!r}")
        yield line
        if text in line:
            return


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_up_runs_the_stack_until_interrupted_and_leaves_nothing(
        tmp_path: Path, marker: str) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NATS_", "ANTHROPIC_", "BATCHBUS_"))}
    env["BATCHBUS_UP_TEST_MARK"] = marker
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "run")  # where `batchbus up` records itself
    script = Path(sys.executable).with_name("batchbus")
    process = subprocess.Popen(
        [str(script), "up", "--processing-seconds", "0.5", "--logs", str(tmp_path / "logs")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = "".join(lines_until(process, "Press Ctrl-C to stop", timeout=90))
        url = re.search(r"export NATS_URL=(\S+)", banner)[1]  # type: ignore[index]
        assert "the Batch API emulator at http://" in banner
        store = Path(re.search(r"\(store (\S+)\)", banner)[1])  # type: ignore[index]
        assert len(processes_with(marker)) == 7  # up, nats-server, emulator, 4 services

        # Recorded where the CLI in another terminal looks, with the URLs it printed.
        recorded = tmp_path / "run" / "batchbus" / f"up-{process.pid}.json"
        assert f"recorded  {recorded} (removed on exit)" in banner
        state = json.loads(recorded.read_text())
        assert (state["nats_url"], state["state"], state["pid"]) == (url, "ready", process.pid)
        assert state["emulator_url"] in banner

        # Another terminal, without NATS_URL: `env` prints the export line, and the
        # commands find the stack by themselves.
        other = {k: v for k, v in env.items() if k != "BATCHBUS_UP_TEST_MARK"}
        printed = subprocess.run([str(script), "env"], env=other, capture_output=True,
                                 text=True, timeout=60)
        assert printed.returncode == 0 and f"export NATS_URL={url}\n" in printed.stdout
        tasks = tmp_path / "tasks.jsonl"
        tasks.write_text(json.dumps(ticket(1)) + "\n")
        submitted = subprocess.run(
            [str(script), "submit", str(tasks), "--tenant", "acme", "--follow"],
            env=other, capture_output=True, text=True, timeout=120)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert re.search(r"by status +succeeded 1$", submitted.stdout, re.M)

        interrupt_up(process, marker)
        assert not recorded.exists()  # removed on exit: no other terminal picks a dead stack
        assert not store.exists()  # the temporary store went with the run
        assert (tmp_path / "logs" / "intake.log").is_file()  # the logs asked for stay
    finally:
        kill_up(process, marker)


def interrupt_up(process: subprocess.Popen[str], marker: str) -> None:
    """Ctrl-C to `batchbus up`: it exits 0 and leaves none of its children running."""
    process.send_signal(signal.SIGINT)
    # Each part's stop is bounded (terminate, then kill after 20 s): 150 s covers all six.
    try:
        code = process.wait(timeout=150)
    except subprocess.TimeoutExpired:
        still = [(pid, Path(f"/proc/{pid}/cmdline").read_bytes()[:100])
                 for pid in processes_with(marker)]
        raise AssertionError(f"`batchbus up` did not stop; still running: {still}") from None
    assert code == 0
    assert processes_with(marker) == []


def kill_up(process: subprocess.Popen[str], marker: str) -> None:
    """After a failure: `batchbus up` and whatever it started are killed."""
    if process.poll() is None:
        process.kill()
        process.wait()
    for pid in processes_with(marker):  # a child of a killed `batchbus up`
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
