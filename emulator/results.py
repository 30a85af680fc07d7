"""The results JSONL of an ended batch, generated lazily in chunks (batches reach 100k lines)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from pydantic_core import to_json

from batchbus.emulator import ids
from batchbus.emulator.lifecycle import Batch
from batchbus.emulator.replies import bare_line, errored_line, reply_message, succeeded_line

_LINES_PER_CHUNK = 500


def result_chunks(batch: Batch, shuffle: bool) -> Iterator[bytes]:
    """Exactly one newline-terminated line per request, never a blank line.

    The shuffle is seeded by the batch id, so a re-download yields identical bytes.
    """
    order = list(range(batch.size))
    if shuffle:
        random.Random(batch.id).shuffle(order)
    kept = batch.finished_before_cut()
    cut_kind = batch.cut()[1]
    for start in range(0, len(order), _LINES_PER_CHUNK):
        lines = []
        for index in order[start : start + _LINES_PER_CHUNK]:
            if index < kept or cut_kind is None:
                line = result_line(batch, index)
            else:
                line = bare_line(batch.custom_ids[index], cut_kind)
            lines.append(to_json(line))
        yield b"\n".join(lines) + b"\n"


def result_line(batch: Batch, index: int) -> dict[str, Any]:
    """The line for a request that ran to its planned outcome."""
    custom_id, plan = batch.custom_ids[index], batch.plans[index]
    seed = f"{batch.id}/{custom_id}"
    if plan.kind == "succeeded":
        params, digest = batch.params[index], batch.hashes[index]
        message_id = ids.message_id(seed)
        message = reply_message(params, digest, message_id, plan, batch.usage_override, "batch")
        return succeeded_line(custom_id, message)
    if plan.kind == "errored":
        request_id = ids.worker_request_id(seed) if plan.worker else None
        return errored_line(custom_id, plan, request_id)
    return bare_line(custom_id, plan.kind)
