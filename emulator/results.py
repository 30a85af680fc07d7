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
# A chunk also ends past this size: 500 lines of 300K-token answers (1.2 MB each) would make
# one chunk of 600 MB; so the download holds about one chunk, whatever the lines' sizes.
CHUNK_BYTES = 1024 * 1024


def result_chunks(batch: Batch, shuffle: bool) -> Iterator[bytes]:
    """Exactly one newline-terminated line per request, never a blank line.

    The shuffle is seeded by the batch id, so a re-download yields identical bytes.
    """
    order = list(range(batch.size))
    if shuffle:
        random.Random(batch.id).shuffle(order)
    kept = batch.finished_before_cut()
    cut_kind = batch.cut()[1]
    lines: list[bytes] = []
    size = 0
    for index in order:
        if index < kept or cut_kind is None:
            line = to_json(result_line(batch, index))
        else:
            line = to_json(bare_line(batch.custom_ids[index], cut_kind))
        lines.append(line)
        size += len(line) + 1
        if len(lines) == _LINES_PER_CHUNK or size >= CHUNK_BYTES:
            yield _joined(lines)
            lines, size = [], 0
    if lines:
        yield _joined(lines)


def _joined(lines: list[bytes]) -> bytes:
    """The lines, each newline-terminated, in one copy."""
    lines.append(b"")
    return b"\n".join(lines)


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
