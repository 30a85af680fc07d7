"""Pure polling schedule: first look soon after submission, then back off to a ceiling."""

from dataclasses import dataclass


@dataclass(frozen=True)
class PollPolicy:
    interval: float  # first poll this long after a batch is seen
    max_interval: float
    growth: float = 1.5

    def next_interval(self, previous: float | None) -> float:
        if previous is None:
            return self.interval
        return min(self.max_interval, previous * self.growth)


@dataclass
class Schedule:
    """When each tracked batch is due for its next poll (monotonic seconds)."""

    policy: PollPolicy
    due: dict[str, float]
    intervals: dict[str, float]

    @classmethod
    def empty(cls, policy: PollPolicy) -> "Schedule":
        return cls(policy, {}, {})

    def is_due(self, key: str, now: float) -> bool:
        if key not in self.due:
            self.due[key] = now  # a batch we have not seen yet: look at it right away
        return now >= self.due[key]

    def polled(self, key: str, now: float) -> None:
        interval = self.policy.next_interval(self.intervals.get(key))
        self.intervals[key] = interval
        self.due[key] = now + interval

    def forget(self, key: str) -> None:
        self.due.pop(key, None)
        self.intervals.pop(key, None)

    def keep_only(self, keys: set[str]) -> None:
        for key in set(self.due) - keys:
            self.forget(key)
