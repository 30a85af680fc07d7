"""Pure polling schedule: how often the poller sweeps the batches in flight.

One sweep looks at every batch in flight with a few list calls (100 batches a page), so its
cost grows with pages, not with batches. Sweeps come at the floor while something changes (a
batch appeared or ended), back off to the ceiling while nothing does, and never come so often
that the calls they make exceed the per-minute budget: the Batches API's rate limit is shared
by every batch endpoint, creates and result downloads included.
"""

import random
from dataclasses import dataclass, field


@dataclass
class Cadence:
    floor: float  # seconds between sweeps while something changes
    ceiling: float  # seconds between sweeps at most: an end is noticed within this
    calls_per_minute: float  # the poller's share of the API's rate limit
    jitter: float = 0.1
    interval: float = field(init=False)
    next_at: float = field(default=float("-inf"), init=False)  # monotonic seconds

    def __post_init__(self) -> None:
        self.interval = self.floor

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def soon(self, now: float) -> None:
        """A new batch to look at: the next sweep comes at the floor from the last one."""
        self.next_at = min(self.next_at, now + self.floor)

    def swept(self, now: float, calls: int, changed: bool, rng: random.Random) -> None:
        """Plans the next sweep after one that made `calls` API calls."""
        base = self.floor if changed else 2 * self.interval
        self._plan(now, base, calls, rng)

    def failed(self, now: float, calls: int, retry_after: float | None,
               rng: random.Random) -> None:
        """A sweep cut short by an API error backs off (at least as long as the API asks)."""
        self._plan(now, 2 * self.interval, calls, rng)
        if retry_after is not None and retry_after > self.interval:
            self.interval, self.next_at = retry_after, now + retry_after

    def _plan(self, now: float, base: float, calls: int, rng: random.Random) -> None:
        within_budget = calls * 60.0 / self.calls_per_minute
        wanted = min(self.ceiling, max(self.floor, base))
        self.interval = max(wanted * rng.uniform(1 - self.jitter, 1 + self.jitter), within_budget)
        self.next_at = now + self.interval
