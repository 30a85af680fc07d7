"""The poller's sweep cadence: at the floor while things change, backing off to the ceiling
while nothing does, and never more calls a minute than its budget."""

import random

from batchbus.services.poller.polling import Cadence


def cadence(calls_per_minute: float = 60.0) -> Cadence:
    return Cadence(floor=10.0, ceiling=30.0, calls_per_minute=calls_per_minute, jitter=0.0)


def test_it_backs_off_to_the_ceiling_while_nothing_changes() -> None:
    c, rng, now = cadence(), random.Random(0), 0.0
    intervals = []
    for _ in range(5):
        assert c.due(now)
        c.swept(now, calls=1, changed=False, rng=rng)
        intervals.append(c.interval)
        assert not c.due(now + c.interval - 0.01)
        now += c.interval
    assert intervals == [20.0, 30.0, 30.0, 30.0, 30.0]


def test_a_change_brings_it_back_to_the_floor() -> None:
    c, rng = cadence(), random.Random(0)
    c.swept(0.0, calls=1, changed=False, rng=rng)
    c.swept(20.0, calls=1, changed=False, rng=rng)
    assert c.interval == 30.0
    c.swept(50.0, calls=1, changed=True, rng=rng)
    assert c.interval == 10.0 and c.next_at == 60.0


def test_a_new_batch_is_looked_at_a_floor_after_the_last_sweep_at_most() -> None:
    c, rng = cadence(), random.Random(0)
    c.swept(0.0, calls=1, changed=False, rng=rng)
    c.swept(20.0, calls=1, changed=False, rng=rng)  # next at 50
    c.soon(21.0)
    assert c.next_at == 31.0


def test_calls_a_minute_stay_within_the_budget_whatever_the_sweep_costs() -> None:
    for calls in (1, 5, 10, 30):
        c, rng, now, made = cadence(calls_per_minute=60.0), random.Random(1), 0.0, 0
        while now < 3600:
            made += calls
            c.swept(now, calls=calls, changed=True, rng=rng)  # always at the floor if it could
            now = c.next_at
        assert made / 60 <= 60.0 + calls  # per minute, over an hour


def test_errors_back_off_at_least_as_long_as_the_api_asks() -> None:
    c, rng = cadence(), random.Random(0)
    c.failed(0.0, calls=1, retry_after=None, rng=rng)
    assert c.interval == 20.0
    c.failed(20.0, calls=1, retry_after=120.0, rng=rng)
    assert c.interval == 120.0


def test_jitter_keeps_it_near_the_planned_interval() -> None:
    c = Cadence(floor=10.0, ceiling=30.0, calls_per_minute=60.0)
    rng = random.Random(3)
    for _ in range(100):
        c.swept(0.0, calls=1, changed=True, rng=rng)
        assert 9.0 <= c.interval <= 11.0
