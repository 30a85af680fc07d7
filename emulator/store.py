"""In-memory batches in creation order, list paging, and the log of accepted creates."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from batchbus.emulator.clock import rfc3339
from batchbus.emulator.errors import invalid_request, not_found
from batchbus.emulator.lifecycle import Batch


@dataclass(frozen=True, slots=True)
class CreateRecord:
    """What one successful create submitted (kept after delete, for exactly-once checks)."""

    batch_id: str
    created_at: float
    custom_ids: list[str]
    params_hashes: list[str]
    body_bytes: int
    betas: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "created_at": rfc3339(self.created_at),
            "request_count": len(self.custom_ids),
            "body_bytes": self.body_bytes,
            "betas": list(self.betas),
            "requests": [
                {"custom_id": custom_id, "params_hash": digest}
                for custom_id, digest in zip(self.custom_ids, self.params_hashes, strict=True)
            ],
        }


class Store:
    """Batches by id; `order` keeps every id ever created (deleted ones stay valid cursors)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.batches: dict[str, Batch] = {}
        self.order: list[str] = []
        self.creates: list[CreateRecord] = []

    def add(self, batch: Batch, body_bytes: int) -> None:
        with self.lock:
            self.batches[batch.id] = batch
            self.order.append(batch.id)
            self.creates.append(
                CreateRecord(
                    batch.id,
                    batch.created_at,
                    batch.custom_ids,
                    batch.hashes,
                    body_bytes,
                    batch.betas,
                )
            )

    def get(self, batch_id: str) -> Batch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise not_found(f"Message Batch {batch_id} not found.")
        return batch

    def remove(self, batch_id: str) -> None:
        with self.lock:
            self.batches.pop(batch_id, None)

    def page(
        self, after_id: str | None, before_id: str | None, limit: int
    ) -> tuple[list[Batch], bool]:
        """Newest first; `after_id` pages towards older batches, `before_id` towards newer."""
        with self.lock:
            newest_first = [self.batches[i] for i in reversed(self.order) if i in self.batches]
            positions = {batch_id: n for n, batch_id in enumerate(reversed(self.order))}
        rank = {batch.id: positions[batch.id] for batch in newest_first}
        if after_id is not None:
            cursor = _cursor(positions, after_id, "after_id")
            older = [batch for batch in newest_first if rank[batch.id] > cursor]
            return older[:limit], len(older) > limit
        if before_id is not None:
            cursor = _cursor(positions, before_id, "before_id")
            newer = [batch for batch in newest_first if rank[batch.id] < cursor]
            return newer[-limit:], len(newer) > limit
        return newest_first[:limit], len(newest_first) > limit


def _cursor(positions: dict[str, int], batch_id: str, name: str) -> int:
    if batch_id not in positions:
        raise invalid_request(f"{name}: Message Batch {batch_id} not found.")
    return positions[batch_id]
