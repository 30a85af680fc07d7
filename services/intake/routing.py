"""Which route a task takes: the batch path when it can meet the task's deadline, else real time.

Pure: intake feeds it the completion times of recent batches and the clock.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from batchbus.shared.models import Route

# A batch ends within 24 hours of its create (or expires): the most the batch path can take
# for one attempt, and what is assumed while there is too little history to judge from.
API_WINDOW_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class RoutePolicy:
    max_wait_seconds: float  # the batcher's flush window: a task may wait this long first
    quantile: float = 0.95  # of recent batches' create -> ended times
    margin: float = 1.5  # the estimate is (wait + quantile) x margin
    min_history: int = 10  # fewer recent batches than this: assume the API's 24 h window


@dataclass(frozen=True)
class Decision:
    route: Literal["batch", "realtime"] | None  # None: the deadline has already passed
    reason: str  # low-cardinality, a metric label


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The q-quantile of `values` (not empty) by nearest rank: always an observed value."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def estimate_seconds(durations: Sequence[float], policy: RoutePolicy) -> float:
    """How long the batch path is expected to take, from publish to result, at worst.

    Never more than a flush window plus the API's 24 h: a batch cannot run longer, so
    history (times the margin) never makes the estimate worse than having none.
    """
    ceiling = policy.max_wait_seconds + API_WINDOW_SECONDS
    if len(durations) < policy.min_history:
        return ceiling
    observed = min(nearest_rank(durations, policy.quantile), API_WINDOW_SECONDS)
    return min((policy.max_wait_seconds + observed) * policy.margin, ceiling)


def decide(route: Route, deadline: datetime | None, now: datetime,
           estimate: float) -> Decision:
    """A forced route is kept; `auto` goes real-time when the deadline is nearer than the
    batch path's estimate. A deadline already past is met by no route: the task is rejected
    rather than paid for at full price after the time it said it was needed by."""
    if deadline is not None and deadline <= now:
        return Decision(None, "deadline_passed")
    if route != "auto":
        return Decision(route, "requested")
    if deadline is None:
        return Decision("batch", "no_deadline")
    if deadline - now < timedelta(seconds=estimate):
        return Decision("realtime", "deadline_near")
    return Decision("batch", "deadline_far")


class BatchHistory:
    """Create -> ended times of the batches that ended in the last `window_seconds`, by batch
    id, so an event read twice (a replay after a restart) counts once."""

    def __init__(self, window_seconds: float = API_WINDOW_SECONDS) -> None:
        self.window = timedelta(seconds=window_seconds)
        self._ended: dict[str, tuple[datetime, float]] = {}

    def __len__(self) -> int:
        return len(self._ended)

    def add(self, batch_id: str, created_at: datetime, ended_at: datetime) -> None:
        self._ended[batch_id] = (ended_at, max(0.0, (ended_at - created_at).total_seconds()))

    def durations(self, now: datetime) -> list[float]:
        """The recent completion times; forgets the batches that ended before the window."""
        since = now - self.window
        for batch_id in [b for b, (ended, _) in self._ended.items() if ended < since]:
            del self._ended[batch_id]
        return [seconds for _, seconds in self._ended.values()]


class Router:
    """Decides tasks' routes from a BatchHistory; the estimate is recomputed at most every
    `refresh_seconds`, not for each task."""

    def __init__(self, history: BatchHistory, policy: RoutePolicy,
                 refresh_seconds: float = 5.0) -> None:
        self.history = history
        self.policy = policy
        self.refresh = timedelta(seconds=refresh_seconds)
        self._estimate: tuple[datetime, float] | None = None

    def estimate(self, now: datetime) -> float:
        if self._estimate is None or not now - self.refresh <= self._estimate[0] <= now:
            self._estimate = (now, estimate_seconds(self.history.durations(now), self.policy))
        return self._estimate[1]

    def decide(self, route: Route, deadline: datetime | None, now: datetime) -> Decision:
        return decide(route, deadline, now, self.estimate(now))
