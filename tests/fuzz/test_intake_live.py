"""The real intake service under a few hundred Hypothesis-made hostile messages, duplicates of
valid ones among them: every message gets exactly one final result or is deduplicated, and the
service stays up with bounded memory."""

import asyncio
import json
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import Any

import nats
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from nats.aio.msg import Msg

from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from batchbus.services.intake.settings import IntakeSettings
from batchbus.services.intake.validation import Limits, Rejection, validate_task
from batchbus.shared import subjects
from tests.fuzz.strategies import (
    ODD_TEXT,
    encode,
    json_values,
    nested,
    placed,
    valid_tasks,
    with_duplicate_key,
)

pytestmark = [pytest.mark.nats, pytest.mark.slow]

HOSTILE = 300
MAX_TASK_BYTES = 64 * 1024  # INTAKE_MAX_TASK_BYTES in tests/conftest.py's pipeline_env
LIMITS = Limits(allowed_models=IntakeSettings().models(), max_tokens=128_000,
                max_task_bytes=MAX_TASK_BYTES)
RSS_GROWTH_BOUND = 150 * 1024 * 1024  # generous: a leak per message would pass it quickly


def valid() -> st.SearchStrategy[dict[str, Any]]:
    # No webhook: none is configured for the test tenant, so naming one is rejected.
    return valid_tasks(2000).map(lambda t: {k: v for k, v in t.items() if k != "webhook"})


def hostile_messages() -> st.SearchStrategy[bytes]:
    fields = st.sampled_from(["task_id", "params", "metadata", "route", "deadline",
                              "params.model", "params.max_tokens", "params.messages",
                              "params.stream"])
    return st.one_of(
        st.binary(max_size=512),
        json_values(ODD_TEXT, max_leaves=20).map(encode),
        st.builds(lambda t, f, v: encode({**t, f: v}) if "." not in f
                  else placed(t, f, encode(v)), valid(), fields, json_values(ODD_TEXT)),
        st.builds(lambda t, n: encode({**t, "metadata": {"pad": "x" * n}}), valid(),
                  st.integers(0, 2 * MAX_TASK_BYTES)),
        st.builds(lambda t, d: placed(t, "metadata", nested(d)), valid(), st.integers(50, 5000)),
        st.builds(lambda t, i: encode({**t, "task_id": i}), valid(), ODD_TEXT),
        st.builds(lambda t, v: with_duplicate_key({**t, "metadata": {}}, "task_id", v),
                  valid(), json_values(ODD_TEXT)),
        valid().map(encode),
    )


def corpus(count: int) -> list[bytes]:
    """A fixed list of messages made by Hypothesis (derandomized: the same on every run)."""
    found: list[bytes] = []

    @settings(max_examples=count, derandomize=True, database=None, phases=[Phase.generate])
    @given(hostile_messages())
    def collect(raw: bytes) -> None:
        found.append(raw)

    collect()
    return found


def task_id_of(raw: bytes) -> str | None:
    """The id a result for this message would carry, if the body names a valid one. Parsed
    on a fresh thread, as intake parses it on a shallow stack: under pytest and Hypothesis
    this stack is deep already, and json.loads gave up on nesting intake reads."""
    with ThreadPoolExecutor(1) as fresh:
        try:
            body = fresh.submit(json.loads, raw).result()
        except (ValueError, RecursionError):
            return None
    task_id = body.get("task_id") if isinstance(body, dict) else None
    return task_id if isinstance(task_id, str) and subjects.is_token(task_id) else None


@dataclass
class Sent:
    seq: int
    raw: bytes
    task_id: str | None


def with_duplicates(messages: list[bytes]) -> list[bytes]:
    """Adds an exact copy of every third valid message and a changed body under the same id of
    every fifth: both must be deduplicated, never billed or answered twice."""
    extra = []
    for n, raw in enumerate(m for m in messages if not isinstance(validate_task(m, LIMITS),
                                                                  Rejection)):
        if n % 3 == 0:
            extra.append(raw)
        if n % 5 == 0:
            body = json.loads(raw)
            extra.append(encode({**body, "metadata": {"changed": True}}))
    return messages + extra


def healthz_status(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
        return int(reply.status)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def intake_drained(js: Any) -> bool:
    info = await js.consumer_info(subjects.STREAM_TASKS, subjects.DURABLE_INTAKE)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


def accounted(sent: list[Sent], rejected: set[int], finals: set[str]) -> list[Sent]:
    """Messages with neither their own rejection nor a final result for their id."""
    return [s for s in sent if s.seq not in rejected and s.task_id not in finals]


async def test_hostile_messages_each_get_one_result_or_are_deduplicated(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str) -> None:
    intake = pipeline.services["intake"]
    assert intake.process is not None
    messages = with_duplicates(corpus(HOSTILE))
    rss_before = rss_bytes(intake.process.pid)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    stored: list[Msg] = []

    async def keep(msg: Msg) -> None:
        stored.append(msg)

    sub = await js.subscribe(subjects.results_of(tenant), cb=keep, ordered_consumer=True)
    try:
        sent = []
        for raw in messages:  # one at a time: the order decides which copy claims an id
            ack = await js.publish(subjects.tasks(tenant), raw, stream=subjects.STREAM_TASKS)
            sent.append(Sent(ack.seq, raw, task_id_of(raw)))
        elsewhere = await publish_on_bad_subjects(js, tenant)
        started, deadline = monotonic(), monotonic() + 90
        while True:
            rejected = {int(m.headers[subjects.MSG_ID].rsplit(":", 1)[1]) for m in stored
                        if m.headers and ":rejected:" in m.headers.get(subjects.MSG_ID, "")}
            finals = {json.loads(m.data)["task_id"] for m in stored
                      if json.loads(m.data)["status"] != "rejected"}
            missing = accounted(sent, rejected, finals)
            if not missing and await intake_drained(js):
                break
            assert monotonic() < deadline, f"{len(missing)} messages unanswered: {missing[:3]}"
            await asyncio.sleep(0.2)  # poll interval while results arrive
        settled_in = monotonic() - started
        await check_results(js, tenant, sent, stored, rejected)
        for subject, msg_id in elsewhere:
            last = await js.get_last_msg(subjects.STREAM_RESULTS, subject)
            assert last.headers and last.headers[subjects.MSG_ID] == msg_id
    finally:
        await sub.unsubscribe()
        await nc.close()
    rss_after = rss_bytes(intake.process.pid)
    for service in pipeline.services.values():
        assert service.process is not None and service.process.poll() is None, service.name
        assert await asyncio.to_thread(healthz_status, service.port) == 200, service.name
    assert rss_after - rss_before < RSS_GROWTH_BOUND, (rss_before, rss_after)
    print(f"\n{len(sent)} messages ({len(rejected)} rejected, {len(finals)} tasks run) "
          f"settled in {settled_in:.1f}s; intake RSS {rss_before >> 20} -> {rss_after >> 20} MiB")


async def check_results(js: Any, tenant: str, sent: list[Sent], stored: list[Msg],
                        rejected: set[int]) -> None:
    """Each rejected message has one rejection that says why; each other message's id has one
    final result; nothing else is stored."""
    by_seq = {s.seq: s for s in sent}
    for m in stored:
        result = json.loads(m.data)
        assert result["tenant"] == tenant
        if result["status"] == "rejected":
            assert result["error"]["type"] == "invalid_task" and result["error"]["message"]
            seq = int(m.headers[subjects.MSG_ID].rsplit(":", 1)[1]) if m.headers else -1
            assert result["task_id"] == (by_seq[seq].task_id or f"invalid-{seq}")
    for s in sent:  # what the validator rejects, the service rejects too
        if isinstance(validate_task(s.raw, LIMITS), Rejection):
            assert s.seq in rejected, s.raw[:200]
    expected = Counter(subjects.results(tenant, s.task_id or f"invalid-{s.seq}")
                       for s in sent if s.seq in rejected)
    expected.update({subjects.results(tenant, t) for t in
                     {s.task_id for s in sent if s.seq not in rejected}})
    info = await js.stream_info(subjects.STREAM_RESULTS, subjects_filter=subjects.results_of(tenant))
    assert Counter(info.state.subjects or {}) == expected


async def publish_on_bad_subjects(js: Any, tenant: str) -> list[tuple[str, str]]:
    """Tasks on subjects with no valid tenant; each must be rejected under `_invalid`."""
    out = []
    for n, raw in enumerate([b"{", encode({"task_id": f"bt-{uuid.uuid4().hex}", "params": {}})]):
        ack = await js.publish(f"{subjects.tasks(tenant)}.extra{n}", raw,
                               stream=subjects.STREAM_TASKS)
        task_id = task_id_of(raw) or f"invalid-{ack.seq}"
        out.append((subjects.results(subjects.INVALID_TENANT, task_id),
                    subjects.rejected_msg_id(subjects.INVALID_TENANT, ack.seq)))
    return out
