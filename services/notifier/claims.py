"""The notifier's side of the claim check (shared/payloads.py): an answer too large for one
NATS message goes to the tenant's payload bucket and the Result names it; stored params are
loaded for a real-time call, stored again for a fallback model, and deleted once their task's
final result is stored."""

import asyncio
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext
from pydantic_core import to_json

from batchbus.services.notifier.results import result_json, stored_answer, with_model
from batchbus.shared.models import AcceptedTask, Result, ResultFields, parse_json
from batchbus.shared.payloads import Payloads, Stored, answer_name, fits, params_name

# A final result as published: its fields (without the answer when that is stored) and JSON.
Published = tuple[ResultFields, bytes]


def answer_bytes(message: dict[str, Any]) -> bytes:
    """A stored answer: the message as compact JSON, NaN and infinities as null (as in a
    Result)."""
    return to_json(message, inf_nan_mode="null")


class ClaimChecks:
    def __init__(self, js: JetStreamContext, payloads: Payloads) -> None:
        self.js = js
        self.payloads = payloads

    @property
    def max_payload(self) -> int:
        """The largest message the connected server takes (it may change on a reconnect)."""
        nc: Client = self.js._nc  # the connection the JetStream context publishes on
        return nc.max_payload

    async def published(self, finals: Sequence[ResultFields]
                        ) -> list[Published | BaseException]:
        """Each final result as it is published, in order: as it is, or with its answer
        stored first when the result would not fit one message (those are stored at once).
        A failed store is that result's error; the others go on."""
        limit = self.max_payload
        bodies = [result_json(f) for f in finals]
        large = [i for i, data in enumerate(bodies)
                 if finals[i]["message"] is not None and not fits(len(data), limit)]
        out: list[Published | BaseException] = list(zip(finals, bodies, strict=True))
        stored = await asyncio.gather(*(self._store(finals[i]) for i in large),
                                      return_exceptions=True)
        for i, found in zip(large, stored, strict=True):
            out[i] = found
        return out

    async def _store(self, fields: ResultFields) -> Published:
        message = fields["message"]
        assert message is not None
        name = answer_name(fields["task_id"])
        # A replay (a redelivered batch) stores the same bytes again: put keeps the object
        # then, so a reader of the stored result is never cut off.
        await self.payloads.put(fields["tenant"], name, answer_bytes(message))
        slim = stored_answer(fields, name)
        return slim, result_json(slim)

    async def result(self, result: Result) -> Result:
        """`published` for one Result (the real-time path)."""
        if result.message is None or fits(len(to_json(result)), self.max_payload):
            return result
        name = answer_name(result.task_id)
        await self.payloads.put(result.tenant, name, answer_bytes(result.message))
        return result.model_copy(update={"message": None, "message_object": name})

    async def params(self, task: AcceptedTask) -> dict[str, Any]:
        """What a real-time call sends: the stored params with the task's own (its model)
        over them, or the task's params. PayloadMissing if the object is gone."""
        if task.params_object is None:
            return task.params
        stored = parse_json(await self.payloads.read(task.tenant, task.params_object,
                                                     digest=task.params_digest))
        if not isinstance(stored, dict):  # intake checked them; only a replaced object
            raise ValueError(f"stored params {task.params_object!r} are not a JSON object")
        return {**stored, **task.params}

    async def fallback_params(self, task: AcceptedTask, model: str) -> Stored | None:
        """The stored params of `task` stored again on `model`, for its fallback attempt;
        None for inline params. The old object stays (a replay of the refused line still
        reads it); the bucket's max age removes it. PayloadMissing if it is gone."""
        if task.params_object is None:
            return None
        data = with_model(await self.payloads.read(task.tenant, task.params_object,
                                                   digest=task.params_digest), model)
        name = params_name(task.task_id, data)  # the same bytes on a replay: the same object
        return await self.payloads.put(task.tenant, name, data)

    async def release(self, tenant: str, params_object: str | None) -> None:
        """Deletes a task's stored params: only once its final result is stored (an attempt
        still to come reads them), never for a dead letter (kept to be looked into)."""
        if params_object is not None:
            await self.payloads.delete(tenant, params_object)
