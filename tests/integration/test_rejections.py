"""Every kind of malformed task gets its own `rejected` result; no service stops."""

import json

import pytest

from batchbus.client import BatchbusClient
from batchbus.launcher.services import Pipeline
from batchbus.shared import subjects
from tests.integration.helpers import gather_results, ticket

pytestmark = pytest.mark.nats


def body(**changes: object) -> bytes:
    task = ticket(7)
    task.update(changes)
    return json.dumps(task).encode()


MALFORMED: dict[str, bytes] = {
    "malformed_json": b'{"task_id": "x", ',
    "not_an_object": b'["a list"]',
    "bad_task_id": body(task_id="no spaces allowed"),
    "missing_field": body(task_id="no-model", params={"max_tokens": 5, "messages": []}),
    "stream_not_supported": body(task_id="streams", params={**ticket(0)["params"],
                                                            "stream": True}),
    "model_not_allowed": body(task_id="gpt", params={**ticket(0)["params"], "model": "gpt-4"}),
    "max_tokens_too_large": body(task_id="huge-out", params={**ticket(0)["params"],
                                                             "max_tokens": 10**9}),
    "too_large": body(task_id="huge-in", params={**ticket(0)["params"],
                                                 "system": "x" * 100_000}),
    "unknown_field": body(task_id="typo", parms={}),
    "bad_field": body(task_id="bad-route", route="teleport"),
}


async def test_each_malformed_task_is_rejected_with_its_reason(
        pipeline: Pipeline, nats_server, tenant: str) -> None:
    async with BatchbusClient(nats_server.url, tenant) as client:
        for raw in MALFORMED.values():
            await client.publish(raw)
        await client.publish(ticket(1))  # a good task after them still goes through
        results = await gather_results(client, len(MALFORMED) + 1)
    statuses = sorted(r[0].status for r in results.values())
    assert statuses == ["rejected"] * len(MALFORMED) + ["succeeded"]
    messages = [r[0].error.message for r in results.values() if r[0].error]
    for words in ("not valid JSON", "must be a JSON object", "task_id", "missing",
                  "stream", "gpt-4", "max_tokens", "bytes", "parms", "route"):
        assert any(words in m for m in messages), (words, messages)
    for service in pipeline.services.values():
        assert service.process is not None and service.process.poll() is None, service.name


async def test_a_task_on_a_subject_without_a_valid_tenant_is_rejected(
        pipeline: Pipeline, nats_server, tenant: str) -> None:
    async with BatchbusClient(nats_server.url, tenant) as client:
        js = client.nc.jetstream()
        await js.publish(f"{subjects.TASKS_PREFIX}.{tenant}.extra", body(task_id=tenant))
        sub = await js.subscribe(subjects.results(subjects.INVALID_TENANT, tenant),
                                 ordered_consumer=True)
        msg = await sub.next_msg(timeout=30)
    result = json.loads(msg.data)
    assert result["status"] == "rejected" and "tenant" in result["error"]["message"]
