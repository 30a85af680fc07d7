"""Claim checks on the notifier's side, on real parts: a nats-server whose max_payload is so
small that an ordinary emulator answer does not fit one message.

End to end (the four services and the emulator, inline params): answers are stored in the
tenant's payload bucket and the Results name them. Then the notifier's parts alone, on a
server without services (so no batcher takes the next attempts they publish): a batch's result
lines and real-time calls of tasks with stored params (deleted once final, kept for a dead
letter, stored again for a fallback, read for a real-time call), replays included.
"""

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import anthropic
import httpx2
import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from prometheus_client import CollectorRegistry

from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer, start_nats
from batchbus.launcher.services import Pipeline
from batchbus.services.notifier.accounting import Accounting
from batchbus.services.notifier.delivery import Delivery, Line
from batchbus.services.notifier.metrics import NotifierMetrics
from batchbus.services.notifier.realtime import RealtimeCalls
from batchbus.services.notifier.settings import NotifierSettings
from batchbus.shared import streams, subjects
from batchbus.shared.cancels import Cancels
from batchbus.shared.models import AcceptedTask, DeadLetter, ManifestEntry, Result
from batchbus.shared.payloads import HEADROOM, PayloadMissing, Payloads, answer_name, digest_of, params_name
from batchbus.shared.pricing import default_prices
from batchbus.shared.publishing import accepted_message, realtime_message, send
from batchbus.shared.settings import AnthropicSettings, NatsSettings
from tests.conftest import pipeline_env
from tests.integration.helpers import results_of, stored_count, ticket

pytestmark = pytest.mark.nats

# An emulator answer (about 500 bytes) makes a Result of about 950; with HEADROOM kept, one
# over 700 bytes has its answer stored apart. Tasks (about 400 bytes), accepted tasks,
# manifests and Results without an answer (about 500) all fit.
MAX_PAYLOAD = HEADROOM + 700
MODEL, FALLBACK = "claude-opus-5-5", "claude-sonnet-5-5"
PUBLISHED = datetime(2026, 11, 27, tzinfo=UTC)


def small_server(tmp_path_factory: pytest.TempPathFactory) -> NatsServer:
    """A nats-server with JetStream (start_nats's flags) and a small max_payload (its config)."""
    config = tmp_path_factory.mktemp("nats-conf") / "small.conf"
    config.write_text(f"max_payload: {MAX_PAYLOAD}\n")
    return start_nats(str(tmp_path_factory.mktemp("nats-small")), config=str(config))


@pytest.fixture(scope="module")
def small_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = small_server(tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bare_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """The same, with no services on it."""
    server = small_server(tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def small_pipeline(small_nats: NatsServer, emulator: EmulatorHandle,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    running = Pipeline(pipeline_env(small_nats.url, emulator.url),
                       Path(tmp_path_factory.mktemp("logs"))).start()
    yield running
    running.stop()


async def stored_result(js: JetStreamContext, tenant: str, task_id: str) -> dict[str, Any]:
    """The task's final result as stored: its JSON, before any reader fills in the answer."""
    msg = await js.get_last_msg(subjects.STREAM_RESULTS, subjects.results(tenant, task_id))
    parsed: dict[str, Any] = json.loads(msg.data or b"")
    return parsed


async def test_answers_too_large_for_a_message_are_stored_and_named(
        small_pipeline: Pipeline, small_nats: NatsServer, tenant: str) -> None:
    tasks = [ticket(i) for i in range(3)]
    tasks.append({**ticket(3), "route": "realtime"})
    failing = ticket(4)
    failing["params"]["metadata"] = {"user_id": "emulate:errored:invalid_request_error"}
    tasks.append(failing)
    results = await results_of(small_nats.url, tenant, tasks)  # one result each
    assert await stored_count(small_nats.url, subjects.results_of(tenant)) == len(tasks)

    nc = await nats.connect(small_nats.url)
    try:
        js = nc.jetstream()
        payloads = Payloads(js, 3600)
        for body in tasks[:4]:
            task_id = body["task_id"]
            raw = await stored_result(js, tenant, task_id)
            assert raw["status"] == "succeeded", raw
            assert (raw["message"], raw["message_object"]) == (None, answer_name(task_id))
            assert raw["usage"]["output_tokens"] > 0 and raw["cost"]["batch_usd"] > 0
            answer = json.loads(await payloads.read(tenant, answer_name(task_id)))
            assert answer["type"] == "message" and answer["content"][0]["text"]
            # The client reads the answer back; the Result keeps naming it.
            assert results[task_id].message == answer
        assert {results[b["task_id"]].route for b in tasks[:4]} == {"batch", "realtime"}
        # A small result (no answer) goes inline, as before.
        raw = await stored_result(js, tenant, failing["task_id"])
        assert (raw["status"], raw["message_object"]) == ("errored", None)
        assert raw["error"]["type"] == "invalid_request_error"
    finally:
        await nc.close()


# --- the notifier's parts alone -------------------------------------------------------------


@pytest.fixture
async def js(bare_nats: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(bare_nats.url)
    js = nc.jetstream()
    await streams.ensure_streams(js, NatsSettings(url=bare_nats.url))
    yield js
    await nc.close()


def settings(url: str, max_attempts: int) -> NotifierSettings:
    return NotifierSettings(nats=NatsSettings(url=url), max_attempts=max_attempts,
                            retry_delay_seconds=0,
                            anthropic=AnthropicSettings(api_key="k", base_url="http://api.test"))


def accounting() -> Accounting:
    return Accounting(NotifierMetrics(CollectorRegistry()), default_prices())


def reply(text_bytes: int = 100, refusal: bool = False, model: str = MODEL) -> dict[str, Any]:
    """A Messages API answer; one of 2,000 bytes of text does not fit a message here."""
    message: dict[str, Any] = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": model,
        "content": [] if refusal else [{"type": "text", "text": "ü" * (text_bytes // 2)}],
        "stop_reason": "refusal" if refusal else "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 34}}
    if refusal:
        message["stop_details"] = {"type": "refusal", "category": "cyber", "explanation": "no"}
    return message


class Tasks:
    """Tasks of one tenant with stored params, as intake would have accepted them."""

    def __init__(self, js: JetStreamContext, tenant: str) -> None:
        self.js = js
        self.tenant = tenant
        self.payloads = Payloads(js, 3600)

    async def params(self, task_id: str, model: str = MODEL) -> str:
        data = json.dumps({"model": model, "max_tokens": 50, "messages": [
            {"role": "user", "content": f"{task_id}: é ✓"}]}).encode()
        name = params_name(task_id, data)
        await self.payloads.put(self.tenant, name, data)
        return name

    def task(self, task_id: str, params_object: str | None, attempt: int = 1,
             **extra: Any) -> AcceptedTask:
        return AcceptedTask(tenant=self.tenant, task_id=task_id, attempt=attempt,
                            params={"model": MODEL}, published_at=PUBLISHED,
                            params_object=params_object, **extra)

    async def line(self, task_id: str, result: dict[str, Any], attempt: int = 1,
                   stored: bool = True, fallback: str | None = None) -> Line:
        """A result line of a batch, its task accepted (for a retry or a dead letter)."""
        name = await self.params(task_id) if stored else f"params.{task_id}.gone"
        task = self.task(task_id, name, attempt, fallback_model=fallback)
        ack = await send(self.js, accepted_message(task))
        entry = ManifestEntry(custom_id=f"c-{task_id}", tenant=self.tenant, task_id=task_id,
                              attempt=attempt, model=MODEL, metadata={}, published_at=PUBLISHED,
                              accepted_seq=ack.seq, fallback_model=fallback,
                              params_object=name)
        return entry, result

    async def exists(self, name: str) -> bool:
        try:
            await self.payloads.info(self.tenant, name)
        except PayloadMissing:
            return False
        return True

    async def last(self, subject: str, stream: str = subjects.STREAM_INTERNAL) -> bytes:
        return (await self.js.get_last_msg(stream, subject)).data or b""


def succeeded(message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "succeeded", "message": message}


OVERLOADED = {"type": "errored", "error": {"type": "error", "error": {
    "type": "overloaded_error", "message": "Overloaded"}}}


async def test_a_batchs_lines_store_answers_and_settle_stored_params(
        js: JetStreamContext, bare_nats: NatsServer, tenant: str) -> None:
    tasks = Tasks(js, tenant)
    lines = [await tasks.line("done", succeeded(reply())),
             await tasks.line("large", succeeded(reply(2_000))),
             await tasks.line("dead", OVERLOADED, attempt=2),  # the last attempt
             await tasks.line("retry", OVERLOADED),
             await tasks.line("refused", succeeded(reply(refusal=True)), fallback=FALLBACK),
             # Its params went past the bucket's max age: no fallback, the refusal is final.
             await tasks.line("gone", succeeded(reply(refusal=True)), stored=False,
                              fallback=FALLBACK)]
    names = {entry.task_id: entry.params_object or "" for entry, _ in lines}
    delivery = Delivery(js, cast(Any, None), await streams.batch_records(
        js, NatsSettings(url=bare_nats.url)), Cancels(await streams.cancels_bucket(
            js, NatsSettings(url=bare_nats.url))), settings(bare_nats.url, 2), accounting(),
        payloads=tasks.payloads)
    await delivery.settle_all(lines, "msgbatch_1")
    answer = await tasks.payloads.info(tenant, answer_name("large"))
    await delivery.settle_all(lines, "msgbatch_1")  # a replay: the notifier restarted

    # One final result each for those that are final; the answer too large stored apart.
    for task_id in ("done", "large", "dead", "gone"):
        assert await stored_count(bare_nats.url, subjects.results(tenant, task_id)) == 1
    for task_id in ("retry", "refused"):
        assert await stored_count(bare_nats.url, subjects.results(tenant, task_id)) == 0
    large = Result.model_validate_json(await tasks.last(
        subjects.results(tenant, "large"), subjects.STREAM_RESULTS))
    assert (large.message, large.message_object) == (None, answer_name("large"))
    assert json.loads(await tasks.payloads.read(tenant, answer_name("large"))) == reply(2_000)
    # The replay stored nothing new: a reader of the object is never cut off.
    assert (await tasks.payloads.info(tenant, answer_name("large"))).nuid == answer.nuid
    done = Result.model_validate_json(await tasks.last(subjects.results(tenant, "done"),
                                                       subjects.STREAM_RESULTS))
    assert (done.message, done.message_object) == (reply(), None)
    gone = Result.model_validate_json(await tasks.last(subjects.results(tenant, "gone"),
                                                       subjects.STREAM_RESULTS))
    assert gone.refusal is not None and gone.attempts == 1

    # Params: deleted once final; kept for the dead letter and for the next attempts.
    assert not await tasks.exists(names["done"]) and not await tasks.exists(names["large"])
    assert await tasks.exists(names["dead"]) and await tasks.exists(names["retry"])
    letter = DeadLetter.model_validate_json(await tasks.last(
        subjects.dead_letters(tenant), subjects.STREAM_DEAD_LETTERS))
    assert (letter.task_id, letter.params_object) == ("dead", names["dead"])
    assert await stored_count(bare_nats.url, subjects.dead_letters(tenant),
                              subjects.STREAM_DEAD_LETTERS) == 1

    # The next attempts, once each: a retry names the same object; a fallback a new one that
    # holds the same params on the fallback model (the refused one's stays for a replay).
    accepted = [AcceptedTask.model_validate_json(data) for data in await all_data(
        js, subjects.accepted(tenant))]
    nxt = {t.task_id: t for t in accepted[len(lines):]}  # after those the test accepted
    assert len(accepted) == len(lines) + 2 and sorted(nxt) == ["refused", "retry"]
    assert nxt["retry"].attempt == nxt["refused"].attempt == 2
    assert nxt["retry"].params_object == names["retry"]
    refused = nxt["refused"]
    assert refused.params == {"model": FALLBACK} and refused.params_object != names["refused"]
    rewritten = await tasks.payloads.read(tenant, refused.params_object or "")
    assert refused.params_object == params_name("refused", rewritten)
    assert refused.params_digest == digest_of(rewritten)  # what the batcher will check
    old = json.loads(await tasks.payloads.read(tenant, names["refused"]))
    assert json.loads(rewritten) == {**old, "model": FALLBACK}


async def all_data(js: JetStreamContext, subject: str) -> list[bytes]:
    """Every message the internal stream keeps on `subject`, oldest first."""
    info = await js.stream_info(subjects.STREAM_INTERNAL, subjects_filter=subject)
    total = sum((info.state.subjects or {}).values())
    sub = await js.subscribe(subject, stream=subjects.STREAM_INTERNAL, ordered_consumer=True)
    try:
        return [(await sub.next_msg(timeout=10)).data for _ in range(total)]
    finally:
        await sub.unsubscribe()


class Api:
    """The Messages API: each task's answer (or HTTP status) by its first message's text."""

    def __init__(self, answers: dict[str, dict[str, Any] | int]) -> None:
        self.answers = answers
        self.bodies: dict[str, dict[str, Any]] = {}

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        task_id = body["messages"][0]["content"].split(":")[0]
        self.bodies[task_id] = body
        answer = self.answers[task_id]
        if isinstance(answer, int):
            return httpx2.Response(answer, json={"type": "error", "error": {
                "type": "overloaded_error", "message": "Overloaded"}})
        return httpx2.Response(200, json=answer)

    def client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(api_key="k", base_url="http://api.test", http_client=(
            anthropic.DefaultAsyncHttpxClient(transport=httpx2.MockTransport(self))))


async def handle_one(js: JetStreamContext, calls: RealtimeCalls, task: AcceptedTask) -> None:
    """The task as intake hands it to the real-time route, handled once."""
    await send(js, realtime_message(task))
    psub = await js.pull_subscribe(  # the tenant's last real-time task: this one
        subjects.realtime(task.tenant), durable=f"rt-{task.task_id}",
        stream=subjects.STREAM_INTERNAL, config=ConsumerConfig(deliver_policy=DeliverPolicy.LAST))
    (msg,) = await psub.fetch(1, timeout=10)
    await calls.handle(msg)
    await psub.unsubscribe()


async def test_real_time_calls_read_stored_params_and_settle_them(
        js: JetStreamContext, bare_nats: NatsServer, tenant: str) -> None:
    tasks = Tasks(js, tenant)
    api = Api({"large": reply(2_000), "dead": 529, "refused": reply(refusal=True)})
    nats_settings = NatsSettings(url=bare_nats.url)
    markers = await streams.realtime_calls_bucket(js, nats_settings)
    cancels = Cancels(await streams.cancels_bucket(js, nats_settings))

    def calls(max_attempts: int) -> RealtimeCalls:
        return RealtimeCalls(js, api.client(), markers, cancels,
                             settings(bare_nats.url, max_attempts), accounting(),
                             payloads=tasks.payloads)

    # The call sends the stored params on the task's model; the answer too large is stored.
    large = tasks.task("large", await tasks.params("large", model="claude-haiku-4-5"))
    stored = json.loads(await tasks.payloads.read(tenant, large.params_object or ""))
    await handle_one(js, calls(3), large)
    assert api.bodies["large"] == {**stored, "model": MODEL}
    raw = json.loads(await tasks.last(subjects.results(tenant, "large"), subjects.STREAM_RESULTS))
    assert (raw["status"], raw["route"], raw["message"], raw["message_object"]) == (
        "succeeded", "realtime", None, answer_name("large"))
    assert raw["usage"]["output_tokens"] == 34
    assert json.loads(await tasks.payloads.read(tenant, answer_name("large"))) == reply(2_000)
    assert not await tasks.exists(large.params_object or "")  # final: deleted

    # Stored params that are gone: a final result that says so, and no call.
    gone = tasks.task("gone", "params.gone.0123456789abcdef")
    await handle_one(js, calls(3), gone)
    raw = json.loads(await tasks.last(subjects.results(tenant, "gone"), subjects.STREAM_RESULTS))
    assert (raw["status"], raw["error"]["type"]) == ("errored", "payload_missing")
    assert "params.gone.0123456789abcdef" in raw["error"]["message"]
    assert "\n" not in raw["error"]["message"] and "gone" not in api.bodies

    # The last attempt failed: a dead letter that names the params, which stay.
    dead = tasks.task("dead", await tasks.params("dead"))
    await handle_one(js, calls(1), dead)
    letter = DeadLetter.model_validate_json(await tasks.last(
        subjects.dead_letters(tenant), subjects.STREAM_DEAD_LETTERS))
    assert (letter.task_id, letter.params_object, letter.result.status) == (
        "dead", dead.params_object, "errored")
    assert await tasks.exists(dead.params_object or "")

    # Refused: the next attempt goes to a batch with the params stored again on the fallback.
    refused = tasks.task("refused", await tasks.params("refused"), fallback_model=FALLBACK)
    await handle_one(js, calls(3), refused)
    nxt = AcceptedTask.model_validate_json(await tasks.last(subjects.accepted(tenant)))
    assert (nxt.task_id, nxt.attempt, nxt.params) == ("refused", 2, {"model": FALLBACK})
    rewritten = json.loads(await tasks.payloads.read(tenant, nxt.params_object or ""))
    old = json.loads(await tasks.payloads.read(tenant, refused.params_object or ""))
    assert rewritten == {**old, "model": FALLBACK}
    assert await stored_count(bare_nats.url, subjects.results(tenant, "refused")) == 0
