"""`batchbus submit` against real NATS and the services: a file with bad lines — one with
params over the Messages API's 32 MiB included — is refused whole, every bad line named in one
run, and nothing is published (issue 15, item 4: a 5 MB third line used to go out after the
first two, then fail with a traceback). A line too large for one NATS message is not bad: it
goes by reference (issue 17, docs/payloads.md)."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest

from batchbus.cli.loader import published_size
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from batchbus.shared import subjects
from batchbus.shared.models import Task
from batchbus.shared.payloads import HEADROOM, MAX_PARAMS_BYTES
from tests.integration.helpers import stored_count, ticket

pytestmark = pytest.mark.nats

ROOT = Path(__file__).resolve().parents[2]
HUGE = MAX_PARAMS_BYTES + 1024  # params no Messages API request may carry


def huge_ticket(i: int) -> dict[str, Any]:
    return ticket(i, messages=[{"role": "user", "content": "x" * HUGE}])


def batchbus(*argv: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: its own process, so stderr holds everything, including
    what asyncio prints at exit (`Task exception was never retrieved`)."""
    return subprocess.run([sys.executable, "-m", "batchbus.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("NATS_", "ANTHROPIC_", "BATCHBUS_"))}
    return clean | {"XDG_RUNTIME_DIR": str(tmp_path / "run"), "PYTHONPATH": str(ROOT)}


def write(path: Path, *lines: object) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


async def server_max_payload(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return nc.max_payload
    finally:
        await nc.close()


def published(url: str, tenant: str) -> int:
    return asyncio.run(stored_count(url, subjects.tasks(tenant), subjects.STREAM_TASKS))


def test_params_over_32_mib_among_good_lines_publish_nothing_and_name_their_size(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str, tmp_path: Path,
        env: dict[str, str]) -> None:
    path = write(tmp_path / "tasks.jsonl", ticket(1), ticket(2), huge_ticket(3), ticket(4))
    done = batchbus("submit", path.name, "--tenant", tenant, "--nats", nats_server.url,
                    env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("tasks.jsonl:3: its params are 33,55") and \
        f"over the Messages API's request size limit of {MAX_PARAMS_BYTES:,} bytes (32 MiB)" \
        in lines[0]
    assert lines[1] == "error: tasks.jsonl: 1 of 4 lines is bad; nothing was published"
    assert "Traceback" not in done.stderr and "never retrieved" not in done.stderr
    assert published(nats_server.url, tenant) == 0


def test_every_bad_line_is_listed_in_one_run_and_nothing_is_published(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str, tmp_path: Path,
        env: dict[str, str]) -> None:
    path = write(tmp_path / "tasks.jsonl",
                 ticket(1),
                 '{"task_id": "ticket-2", "params": {"model": }',  # JSON
                 huge_ticket(3),  # params over the Messages API's request size limit
                 ticket(4, model="claude-sonnet-4-5"),  # retired
                 ticket(5, temperature=0.2),  # a param the model refuses
                 ticket(6, max_tokens=64_001),  # above the model's limit
                 {**ticket(7), "unknown": True},  # the Task shape, as intake checks it
                 ticket(1),  # an id used twice
                 {"model": "claude-sonnet-4-6", "max_tokens": 8,
                  "messages": [{"role": "user", "content": "fine"}]})
    done = batchbus("submit", path.name, "--tenant", tenant, "--nats", nats_server.url,
                    "--follow", env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert [line.split(":")[1] for line in lines[:-1]] == ["2", "3", "4", "5", "6", "7", "8"]
    expected = {
        2: "invalid JSON: Expecting value at column 45",
        3: "its params are 33,55",
        4: "params.model 'claude-sonnet-4-5' was retired",
        5: "params.temperature is not accepted by claude-sonnet-4-6",
        6: "params.max_tokens 64001 is above claude-sonnet-4-6's limit of 64000",
        7: "unknown task field(s): unknown",
        8: "task_id 'ticket-00001' is already used on line 1",
    }
    for line, (number, start) in zip(lines, expected.items(), strict=False):
        assert line.startswith(f"tasks.jsonl:{number}: {start}"), line
    assert lines[-1] == "error: tasks.jsonl: 7 of 9 lines are bad; nothing was published"
    assert "Traceback" not in done.stderr and "never retrieved" not in done.stderr
    assert published(nats_server.url, tenant) == 0


def test_a_good_file_still_goes_out(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str, tmp_path: Path,
        env: dict[str, str]) -> None:
    path = write(tmp_path / "tasks.jsonl", ticket(1), ticket(2, model="claude-opus-4-5"))
    done = batchbus("submit", path.name, "--tenant", tenant, "--nats", nats_server.url,
                    env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"published 2 tasks to {subjects.tasks(tenant)} on NATS at {nats_server.url}" \
        in done.stdout
    # A deprecated model is a warning, not a refusal.
    assert done.stderr.startswith("tasks.jsonl:2: warning: claude-opus-4-5 is deprecated")
    assert published(nats_server.url, tenant) == 2


def sized_ticket(i: int, size: int) -> dict[str, Any]:
    """A ticket whose message as published inline is exactly `size` bytes."""
    base = ticket(i, messages=[{"role": "user", "content": ""}])
    pad = size - published_size(Task.model_validate(base))
    return ticket(i, messages=[{"role": "user", "content": "x" * pad}])


async def stored_task(url: str, tenant: str) -> dict[str, Any]:
    """The tenant's last task message as JetStream stored it."""
    nc = await nats.connect(url)
    try:
        msg = await nc.jetstream().get_last_msg(subjects.STREAM_TASKS, subjects.tasks(tenant))
        return dict(json.loads(msg.data or b""))
    finally:
        await nc.close()


def test_a_line_goes_by_reference_from_max_payload_less_the_headroom(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str, tmp_path: Path,
        env: dict[str, str]) -> None:
    room = asyncio.run(server_max_payload(nats_server.url)) - HEADROOM
    fits = write(tmp_path / "fits.jsonl", sized_ticket(1, room))
    done = batchbus("submit", fits.name, "--tenant", tenant, "--nats", nats_server.url,
                    env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "params" in asyncio.run(stored_task(nats_server.url, tenant))  # inline
    # One byte more: the params go to the tenant's bucket, the task names them.
    over = write(tmp_path / "over.jsonl", sized_ticket(2, room + 1))
    done = batchbus("submit", over.name, "--tenant", tenant, "--nats", nats_server.url,
                    env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"published 1 tasks (1 with their params in object store payloads_{tenant})" \
        in " ".join(done.stdout.split())
    sent = asyncio.run(stored_task(nats_server.url, tenant))
    assert sent["task_id"] == "ticket-00002" and "params" not in sent
    assert sent["params_object"].startswith("params.ticket-00002.")
    assert published(nats_server.url, tenant) == 2
