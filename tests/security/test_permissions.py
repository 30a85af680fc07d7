"""deploy/nats/accounts.conf on a real nats-server: the services run with their own users,
a tenant gets its results, and every step outside a user's subjects is denied — seen by the
client's error callback, as the server reports it."""

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchbus.client import BatchbusClient
from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import server_binary
from batchbus.launcher.services import SERVICES, Pipeline
from batchbus.shared import streams, subjects
from batchbus.shared.models import BatchEvent, Result
from batchbus.shared.settings import NatsSettings
from tests.conftest import pipeline_env
from tests.integration.helpers import ticket
from tests.security.conftest import (
    ACCOUNTS,
    USERS,
    SecuredNats,
    connect_as,
    expect_denied,
    password_variable,
)

pytestmark = [pytest.mark.nats, pytest.mark.slow]


def directive(outcome: str) -> dict[str, Any]:
    return {"metadata": {"user_id": f"emulate:{outcome}"}}


@pytest.fixture(scope="module")
def secured_pipeline(secured_nats: SecuredNats, emulator: EmulatorHandle,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """The four services, each connecting as its own NATS user."""
    log_dir = Path(os.environ.get("BATCHBUS_TEST_LOGS") or tmp_path_factory.mktemp("logs"))
    env = pipeline_env(secured_nats.url, emulator.url, NOTIFIER_MAX_ATTEMPTS="2",
                       BATCHER_RECOVERY_INTERVAL_SECONDS="0.5",  # records retire soon
                       INTAKE_BUDGETS="acme=100")  # reserved by intake, settled by the notifier
    pipeline = Pipeline(env, log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        for name in SERVICES:
            pipeline.add(name, name, NATS_USER=name, NATS_PASSWORD=secured_nats.passwords[name])
        for service in pipeline.services.values():
            service.wait_ready()
        yield pipeline
    finally:
        pipeline.stop()


async def test_a_tenant_publishes_and_reads_its_own_results(
        secured_pipeline: Pipeline, secured_nats: SecuredNats) -> None:
    """Every path a task can take (success, retry, permanent error, dead letter, real time,
    budget, rejection, cancel) runs under the services' users; a violation in any of them
    shows in their logs."""
    tasks = {
        "ok": ticket(0),
        "flaky": ticket(1, **directive("errored:overloaded_error:first=1")),
        "broken": ticket(2, **directive("errored:invalid_request_error")),
        "doomed": ticket(3, **directive("errored:api_error")),
        "now": {**ticket(4), "route": "realtime"},  # the real-time Messages API path
    }
    async with connect_as(secured_nats.url, "acme", secured_nats.passwords["acme"],
                          inbox_prefix="_INBOX_acme") as (nc, watch):
        got: dict[str, Result] = {}
        done = asyncio.Event()

        async def on_result(msg: Any) -> None:
            result = Result.model_validate_json(msg.data)
            got[result.task_id] = result
            if len(got) == len(tasks) + 1:
                done.set()

        await nc.subscribe(subjects.results_of("acme"), cb=on_result)
        ended: set[str] = set()  # the tenant's own copies of its batches' events
        batch_ended = asyncio.Event()

        async def on_event(msg: Any) -> None:
            event = BatchEvent.model_validate_json(msg.data)
            if event.event == "ended":
                ended.add(event.batch_id)
                batch_ended.set()

        await nc.subscribe(subjects.events_of("acme"), cb=on_event)
        js = nc.jetstream()
        for task in tasks.values():  # each PubAck comes back on _INBOX_acme
            await js.publish(subjects.tasks("acme"), json.dumps(task).encode(),
                             stream=subjects.STREAM_TASKS)
        await js.publish(subjects.tasks("acme"), b'{"task_id": "bad", "params": 7}')
        await js.publish(subjects.cancel("acme"), b'{"task_id": "never-sent"}')
        await asyncio.wait_for(done.wait(), 60)
        await asyncio.wait_for(batch_ended.wait(), 30)
        assert watch.errors.empty()

    by_name = {name: got[task["task_id"]].status for name, task in tasks.items()}
    assert by_name == {"ok": "succeeded", "flaky": "succeeded", "broken": "errored",
                       "doomed": "errored", "now": "succeeded"}
    assert got[tasks["now"]["task_id"]].route == "realtime"
    assert got["bad"].status == "rejected"
    assert ended and ended <= {r.batch_id for r in got.values()}
    await all_records_retired(secured_nats)  # the last steps: record and manifest deleted
    for name, service in secured_pipeline.services.items():
        log = service.log_path.read_text().lower()
        assert "permissions violation" not in log, f"{name} was denied something it needs"

    # A stored replay: a pull consumer whose create request names the tenant's own filter.
    settings = NatsSettings(user="acme", password=secured_nats.passwords["acme"])
    async with BatchbusClient(secured_nats.url, "acme", nats_settings=settings) as client:
        replayed = {r.task_id: r.status async for r in client.history()}
    assert replayed == {task_id: r.status for task_id, r in got.items()}


async def all_records_retired(secured_nats: SecuredNats, timeout: float = 30.0) -> None:
    """Waits (bounded) until every batch record is retired, read as the poller."""
    async with connect_as(secured_nats.url, "poller", secured_nats.passwords["poller"]) as (nc, _):
        records = await streams.batch_records(nc.jetstream(), NatsSettings())
        deadline = asyncio.get_running_loop().time() + timeout
        while await records.all():
            assert asyncio.get_running_loop().time() < deadline, "records never retired"
            await asyncio.sleep(0.2)  # poll interval while the batcher marks them acked


TENANT_DENIED_PUBLISH = [
    subjects.tasks("globex"),  # another tenant's tasks
    subjects.cancel("globex"),
    subjects.results("acme", "forged"),  # results come only from batchbus
    subjects.accepted("acme"),  # internal hand-offs
    subjects.BATCH_ENDED,
    f"$KV.{subjects.KV_TASK_IDS}.acme.x",
    f"$JS.API.STREAM.INFO.{subjects.STREAM_RESULTS}",  # would list every result subject
    f"$JS.API.STREAM.MSG.GET.{subjects.STREAM_RESULTS}",  # reads any stored result
    f"$JS.API.CONSUMER.CREATE.{subjects.STREAM_RESULTS}",  # a consumer with any filter
    f"$JS.API.CONSUMER.CREATE.{subjects.STREAM_RESULTS}.peek.batchbus.results.globex.>",
    f"$JS.API.CONSUMER.MSG.NEXT.{subjects.STREAM_RESULTS}.{subjects.DURABLE_NOTIFIER_WEBHOOKS}",
    f"$JS.API.STREAM.DELETE.{subjects.STREAM_TASKS}",
]
TENANT_DENIED_SUBSCRIBE = [
    subjects.results_of("globex"),
    subjects.RESULTS_ALL,
    subjects.TASKS_ALL,
    subjects.INTERNAL_ALL,
    subjects.EVENTS_ALL,  # batches mix tenants: each sees only its own copies
    subjects.BATCH_EVENTS,
    subjects.events_of("globex"),
    subjects.DEAD_LETTERS_ALL,
    "_INBOX.>",  # the services' replies
    "_INBOX_globex.>",
]


async def test_a_tenant_is_denied_everything_else(secured_pipeline: Pipeline,
                                                  secured_nats: SecuredNats) -> None:
    async with connect_as(secured_nats.url, "acme", secured_nats.passwords["acme"],
                          inbox_prefix="_INBOX_acme") as (nc, watch):
        await expect_denied(nc, watch, TENANT_DENIED_PUBLISH, TENANT_DENIED_SUBSCRIBE)

        # The create subject names acme's filter but the request asks for globex's: the
        # server refuses it, so a replay consumer reads only what its subject allows.
        sneaky = f"$JS.API.CONSUMER.CREATE.{subjects.STREAM_RESULTS}.sneaky." \
                 f"{subjects.results_of('acme')}"
        body = {"stream_name": subjects.STREAM_RESULTS,
                "config": {"name": "sneaky", "filter_subject": subjects.results_of("globex"),
                           "ack_policy": "none"}}
        reply = json.loads((await nc.request(sneaky, json.dumps(body).encode(), timeout=5)).data)
        assert "error" in reply and "filter" in reply["error"]["description"].lower()

        # Nor can it push its results into another tenant's live results subscription.
        body["config"] = {"name": "pusher", "filter_subject": subjects.results_of("acme"),
                          "deliver_subject": subjects.results("globex", "spoof"),
                          "ack_policy": "none"}
        pusher = f"$JS.API.CONSUMER.CREATE.{subjects.STREAM_RESULTS}.pusher." \
                 f"{subjects.results_of('acme')}"
        reply = json.loads((await nc.request(pusher, json.dumps(body).encode(), timeout=5)).data)
        assert "cycle" in reply["error"]["description"]
        assert watch.errors.empty()  # allowed subjects raised nothing


async def test_a_service_user_is_denied_outside_its_subjects(
        secured_pipeline: Pipeline, secured_nats: SecuredNats) -> None:
    denied = {
        "poller": ([subjects.results("acme", "forged"), subjects.accepted("acme"),
                    f"$KV.{subjects.KV_TASK_IDS}.acme.x",
                    f"$JS.API.STREAM.DELETE.{subjects.STREAM_TASKS}"],
                   [subjects.TASKS_ALL, subjects.results_of("acme")]),
        "intake": ([subjects.BATCH_ENDED, f"$JS.API.STREAM.PURGE.{subjects.STREAM_RESULTS}",
                    f"$KV.{subjects.KV_BATCHES}.x"],
                   [subjects.RESULTS_ALL, "_INBOX_acme.>"]),
    }
    for user, (publish, subscribe) in denied.items():
        async with connect_as(secured_nats.url, user, secured_nats.passwords[user]) as (nc, watch):
            await expect_denied(nc, watch, publish, subscribe)


async def test_batcher_runs_ping_each_other(secured_nats: SecuredNats) -> None:
    """A run answers on its own subject, to the pinger's inbox (allow_responses), and pings
    others (services/batcher/liveness.py); a tenant can do neither."""
    run = subjects.batcher_run("run1")
    password = secured_nats.passwords["batcher"]
    async with connect_as(secured_nats.url, "batcher", password) as (answerer, answer_watch), \
            connect_as(secured_nats.url, "batcher", password) as (pinger, ping_watch):
        async def answer(msg: Any) -> None:
            await msg.respond(b"")

        await answerer.subscribe(run, cb=answer)
        await answerer.flush()
        assert (await pinger.request(run, b"", timeout=5)).data == b""
        assert answer_watch.errors.empty() and ping_watch.errors.empty()
    async with connect_as(secured_nats.url, "acme", secured_nats.passwords["acme"],
                          inbox_prefix="_INBOX_acme") as (nc, watch):
        await expect_denied(nc, watch, [run], [run])


async def test_a_wrong_password_is_refused(secured_nats: SecuredNats) -> None:
    with pytest.raises(Exception, match="(?i)authorization"):
        async with connect_as(secured_nats.url, "acme", "not-the-password",
                              max_reconnect_attempts=1):
            pass


def test_the_example_server_config_is_valid_and_holds_no_password() -> None:
    """deploy/nats/nats-server.conf parses (nats-server -t) once the passwords are in the
    environment, and not before: none is written in the files."""
    command = [server_binary(), "-c", str(ACCOUNTS.with_name("nats-server.conf")), "-t"]
    env = {password_variable(user): "x" for user in USERS}
    ok = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    missing = subprocess.run(command, env={}, capture_output=True, text=True, timeout=30,
                             check=False)
    assert missing.returncode != 0 and "BATCHBUS_" in missing.stderr
