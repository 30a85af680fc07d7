"""Betas are per batch: tasks with different sets never share one, and the create sends the
set as the `anthropic-beta` header (what a create sends is checked against the emulator in
tests/integration/test_models.py and test_refusals.py)."""

from datetime import UTC, datetime
from typing import Any, cast

import pytest
from anthropic import AsyncAnthropic
from nats.aio.msg import Msg

from batchbus.services.batcher.batching import FlushPolicy, PendingBatch
from batchbus.services.batcher.metrics import BatcherMetrics
from batchbus.services.batcher.submission import Pending, Submitter
from batchbus.shared.anthropic_client import beta_headers
from batchbus.shared.models import AcceptedTask, Task
from batchbus.shared.records import BatchRecords

PARAMS = {"model": "claude-opus-5", "max_tokens": 5,
          "messages": [{"role": "user", "content": "hi"}]}


def accepted(task_id: str, betas: list[str]) -> AcceptedTask:
    return AcceptedTask(tenant="acme", task_id=task_id, params=PARAMS, betas=betas,
                        published_at=datetime.now(UTC))


def held(seq: int, task: AcceptedTask) -> Pending:
    reply = f"$JS.ACK.internal.batcher.1.{seq}.{seq}.1700000000000000000.0"
    msg = Msg(cast(Any, None), "batchbus.internal.accepted.acme", reply,
              task.model_dump_json().encode())
    return Pending.of(msg, task)


def test_a_beta_set_ignores_order_and_repeats() -> None:
    def betas(*names: str) -> list[str]:
        return Task(task_id="t", params={}, betas=list(names)).betas

    assert betas("b", "a", "b") == betas("a", "b") == ["a", "b"]
    assert betas() == []
    assert held(1, accepted("t", ["x", "w", "x"])).betas == ("w", "x")


def test_the_header_is_the_set_comma_separated_and_absent_without_betas() -> None:
    assert beta_headers(("a", "b")) == {"anthropic-beta": "a,b"}
    assert beta_headers(()) == {} and beta_headers([]) == {}


def batch() -> PendingBatch[str]:
    return PendingBatch(FlushPolicy(max_requests=3, max_bytes=1000, max_wait=10.0))


def test_a_task_of_another_beta_set_flushes_the_pending_batch_first() -> None:
    pending = batch()
    assert pending.flush_before(("a",), 10) is None  # nothing pending: any set starts one
    pending.add("r1", 10, 0.0, ("a",))
    assert pending.betas == ("a",)
    assert pending.flush_before(("a",), 10) is None
    assert pending.flush_before(("a", "b"), 10) == "betas"
    assert pending.flush_before((), 10) == "betas"
    with pytest.raises(ValueError):
        pending.add("r2", 10, 0.0, ())
    assert pending.take() == ["r1"] and pending.betas == ()
    pending.add("r2", 10, 0.0, ())  # after the flush, the new set starts the next batch
    assert pending.flush_before((), 10) is None


def test_betas_come_before_bytes_and_bytes_still_flush() -> None:
    pending = batch()
    pending.add("big", 900, 0.0, ("a",))
    assert pending.flush_before(("b",), 500) == "betas"
    assert pending.flush_before(("a",), 500) == "bytes"


def test_a_stream_of_tasks_makes_one_batch_per_run_of_equal_sets() -> None:
    """What the collector does at each take: flush while a reason says so, then add."""
    pending, batches = batch(), []
    sets = [(), (), ("a",), ("a",), ("a",), ("a",), (), ("b",), ("b",)]
    for i, betas in enumerate(sets):
        while (reason := pending.flush_before(betas, 10)) is not None:
            batches.append((reason, pending.betas, pending.take()))
        pending.add(f"r{i}", 10, 0.0, betas)
        if pending.flush_reason(0.0) == "count":
            batches.append(("count", pending.betas, pending.take()))
    batches.append(("end", pending.betas, pending.take()))
    assert batches == [("betas", (), ["r0", "r1"]),
                       ("count", ("a",), ["r2", "r3", "r4"]),
                       ("betas", ("a",), ["r5"]),
                       ("betas", (), ["r6"]),
                       ("end", ("b",), ["r7", "r8"])]


async def test_a_submit_refuses_requests_of_different_betas() -> None:
    submitter = Submitter(cast(AsyncAnthropic, None), cast(BatchRecords, None), cast(Any, None),
                          BatcherMetrics(), settle_seconds=0, create_timeout=5, stale_after=60,
                          payloads=cast(Any, None))
    items = [held(1, accepted("t1", ["a"])), held(2, accepted("t2", []))]
    with pytest.raises(ValueError, match="different betas"):
        await submitter.submit(items, 100)
