"""Pure polling schedule: look often just after submission and near the expected end,
back off with jitter in between, always between a floor and a ceiling."""

import random
import statistics
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PollPolicy:
    floor: float
    ceiling: float
    jitter: float = 0.2

    def next_delay(self, age: float, previous: float | None, expected: float | None,
                   rng: random.Random) -> float:
        """Seconds until the next poll of a batch that is `age` seconds old."""
        if previous is None or age < 3 * self.floor:
            delay = self.floor  # small batches often end within moments
        elif expected is not None and 0.8 * expected <= age <= 1.25 * expected:
            delay = 0.05 * expected  # around the expected end: look often, not constantly
        else:
            delay = 2 * previous
            if expected is not None and age < 0.8 * expected:
                delay = min(delay, 0.8 * expected - age)  # do not sleep past the expected end
        delay *= rng.uniform(1 - self.jitter, 1 + self.jitter)
        return min(self.ceiling, max(self.floor, delay))

    def after_error(self, previous: float | None, rng: random.Random) -> float:
        """A failed poll (429, 5xx, timeout) backs off; it never fails the batch."""
        delay = 2 * (previous or self.floor) * rng.uniform(1 - self.jitter, 1 + self.jitter)
        return min(self.ceiling, max(self.floor, delay))


@dataclass
class Completions:
    """How long recent batches took, to predict when the next ones end."""

    recent: deque[float] = field(default_factory=lambda: deque(maxlen=50))

    def add(self, seconds: float) -> None:
        self.recent.append(seconds)

    def expected(self) -> float | None:
        return statistics.median(self.recent) if self.recent else None


@dataclass
class Schedule:
    """When each tracked batch is next due (monotonic seconds) and its last delay."""

    due: dict[str, float] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)

    def is_due(self, key: str, now: float) -> bool:
        return now >= self.due.setdefault(key, now)  # a new batch: look right away

    def plan(self, key: str, now: float, delay: float) -> None:
        self.delays[key] = delay
        self.due[key] = now + delay

    def keep_only(self, keys: set[str]) -> None:
        for key in set(self.due) - keys:
            self.due.pop(key, None)
            self.delays.pop(key, None)
