"""How a task goes out: inline, or, when it would not fit in one NATS message, with its params
stored in the tenant's payload bucket first and named by the task (the claim check of
docs/payloads.md). Pure: the client does the storing and publishing, the CLI checks with it.
"""

from dataclasses import dataclass

from pydantic_core import to_json

from batchbus.shared.models import Task
from batchbus.shared.payloads import HEADROOM, MAX_PARAMS_BYTES, fits, params_name


class TaskTooLarge(ValueError):
    """A task that cannot be sent at all, even by reference; `reason` says why and what to do
    (the CLI prints it after `FILE:LINE:`), the message names the task too."""

    def __init__(self, task_id: str, reason: str) -> None:
        super().__init__(f"task {task_id!r}: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A task message as it is published, and the params to store first when it names them
    (`stored`: the object's name and bytes)."""

    data: bytes
    stored: tuple[str, bytes] | None = None


def encode(task: Task) -> bytes:
    """The task message: what is left at its defaults is left out (an old intake reads it)."""
    return task.model_dump_json(exclude_defaults=True).encode()


def params_too_large(task: Task, size: int) -> str | None:
    """Why the task's params cannot be sent (over the Messages API's request size limit), or
    None. `size` is the task's encoded size, which bounds its params': only a task larger than
    the limit has its params encoded to measure them."""
    if size <= MAX_PARAMS_BYTES:
        return None
    params = len(to_json(task.params))
    if params <= MAX_PARAMS_BYTES:
        return None
    return (f"its params are {params:,} bytes as JSON, over the Messages API's request size "
            f"limit of {MAX_PARAMS_BYTES:,} bytes (32 MiB): send large documents and images by "
            "URL or Files API file_id instead of base64, or split the task")


def outgoing(task: Task, max_payload: int) -> Outgoing:
    """The task inline when it fits in `max_payload` with HEADROOM to spare, else its params
    to store and the task naming them. A task that names stored params already goes as it is.

    Raises TaskTooLarge for params over MAX_PARAMS_BYTES, or a task too large even without
    its params (its metadata).
    """
    data = encode(task)
    if task.params_object is None:
        reason = params_too_large(task, len(data))
        if reason is not None:
            raise TaskTooLarge(task.task_id, reason)
    if fits(len(data), max_payload):
        return Outgoing(data)
    stored = None
    if task.params_object is None:
        params = to_json(task.params)  # compact, exactly the bytes the request will carry
        stored = (params_name(task.task_id, params), params)
        # model_copy skips the params-or-object validator: `params` at its default is left out.
        data = encode(task.model_copy(update={"params": {}, "params_object": stored[0]}))
    if not fits(len(data), max_payload):
        raise TaskTooLarge(task.task_id, (
            f"the task is {len(data):,} bytes as published even with its params stored "
            f"apart, over the server's max_payload of {max_payload:,} bytes less {HEADROOM:,} "
            "kept for headers: shorten its metadata"))
    return Outgoing(data, stored)
