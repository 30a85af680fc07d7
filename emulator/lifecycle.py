"""A stored batch and its lifecycle, computed lazily from the emulated clock.

Request i finishes at created_at + processing_seconds * (i + 1) / n. A cancel or the 24 h
expiry cuts that schedule: requests not finished by the cut become canceled / expired.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from batchbus.emulator.clock import rfc3339
from batchbus.emulator.config import UsageOverride
from batchbus.emulator.directives import ResultKind
from batchbus.emulator.outcomes import Plan

EXPIRY_SECONDS = 24 * 3600.0
ARCHIVE_SECONDS = 29 * 24 * 3600.0
KINDS: tuple[ResultKind, ...] = ("succeeded", "errored", "canceled", "expired")

Status = Literal["in_progress", "canceling", "ended"]
CutKind = Literal["canceled", "expired"]


@dataclass(eq=False)
class Batch:
    id: str
    created_at: float
    processing_seconds: float
    custom_ids: list[str]
    params: list[dict[str, Any]]  # what each reply needs (replies.reply_params), not the prompts
    hashes: list[str]
    plans: list[Plan]
    cancel_at: float | None = None
    cancel_seconds: float = 0.0
    usage_override: UsageOverride | None = None
    betas: tuple[str, ...] = ()  # the create's anthropic-beta names, for every request
    _kinds: list[str] = field(default_factory=list, repr=False)
    _final: dict[str, int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._kinds = [plan.kind for plan in self.plans]

    @property
    def size(self) -> int:
        return len(self.custom_ids)

    @property
    def expires_at(self) -> float:
        return self.created_at + EXPIRY_SECONDS

    @property
    def archives_at(self) -> float:
        return self.created_at + ARCHIVE_SECONDS

    def cut(self) -> tuple[float, CutKind | None]:
        """When unfinished requests stop, and what they become (None: all finish)."""
        if self.cancel_at is not None:
            return self.cancel_at, "canceled"
        natural_end = self.created_at + self.processing_seconds
        if natural_end > self.expires_at:
            return self.expires_at, "expired"
        return natural_end, None

    def ended_at(self) -> float:
        if self.cancel_at is not None:
            return self.cancel_at + self.cancel_seconds
        return self.cut()[0]

    def status(self, now: float) -> Status:
        if now >= self.ended_at():
            return "ended"
        return "canceling" if self.cancel_at is not None else "in_progress"

    def finished_by(self, moment: float) -> int:
        """How many requests (in submission order) have finished at `moment`."""
        if self.processing_seconds <= 0:
            return self.size
        done = math.floor((moment - self.created_at) * self.size / self.processing_seconds)
        return max(0, min(self.size, done))

    def finished_before_cut(self) -> int:
        """Requests (a prefix in submission order) that keep their planned outcome."""
        cut_time, cut_kind = self.cut()
        return self.size if cut_kind is None else self.finished_by(cut_time)

    def counts(self, now: float, incremental: bool) -> dict[str, int]:
        """The five request_counts; they always sum to the batch size."""
        if self.status(now) == "ended":
            return dict(self._final_counts())
        if not incremental:
            return _counts(Counter(), self.size)
        done = self.finished_by(min(now, self.cut()[0]))
        return _counts(Counter(self._kinds[:done]), self.size - done)

    def _final_counts(self) -> dict[str, int]:
        if self._final is None:
            cut_kind = self.cut()[1]
            done = self.finished_before_cut()
            tally = Counter(self._kinds[:done])
            if cut_kind is not None:
                tally[cut_kind] += self.size - done
            self._final = _counts(tally, 0)
        return self._final


def _counts(tally: Counter[str], processing: int) -> dict[str, int]:
    return {"processing": processing, **{kind: tally.get(kind, 0) for kind in KINDS}}


def batch_json(batch: Batch, now: float, incremental: bool, base_url: str) -> dict[str, Any]:
    """The MessageBatch object, every field present; results_url points back at us."""
    ended = batch.status(now) == "ended"
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": batch.status(now),
        "request_counts": batch.counts(now, incremental),
        "created_at": rfc3339(batch.created_at),
        "expires_at": rfc3339(batch.expires_at),
        "ended_at": rfc3339(batch.ended_at()) if ended else None,
        "cancel_initiated_at": None if batch.cancel_at is None else rfc3339(batch.cancel_at),
        "archived_at": rfc3339(batch.archives_at) if now >= batch.archives_at else None,
        "results_url": results_url(base_url, batch.id) if ended else None,
    }


def results_url(base_url: str, batch_id: str) -> str:
    return f"{base_url.rstrip('/')}/v1/messages/batches/{batch_id}/results"
