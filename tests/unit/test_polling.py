"""The poller's schedule: often at first and near the expected end, bounded, cheap overall."""

import random

import pytest

from batchbus.services.poller.polling import Completions, PollPolicy, Schedule

POLICY = PollPolicy(floor=10.0, ceiling=300.0)


def polls_until(duration: float, expected: float | None, seed: int = 1) -> tuple[int, float]:
    """Polls of a batch that ends after `duration` seconds, and the wait after its end."""
    rng, age, previous, polls = random.Random(seed), 0.0, None, 0
    while True:
        delay = POLICY.next_delay(age, previous, expected, rng)
        age, previous = age + delay, delay
        polls += 1
        if age >= duration:
            return polls, age - duration


@pytest.mark.parametrize("duration", [60.0, 600.0, 3600.0])
@pytest.mark.parametrize("expected", [None, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("seed", range(5))
def test_polls_stay_few_and_never_wait_past_the_ceiling(duration: float, expected: float | None,
                                                        seed: int) -> None:
    polls, late = polls_until(duration, None if expected is None else expected * duration, seed)
    assert polls <= 30
    assert late <= POLICY.ceiling


def test_the_first_polls_come_at_the_floor() -> None:
    rng = random.Random(0)
    assert 10.0 <= POLICY.next_delay(0.0, None, None, rng) <= 12.0
    assert 10.0 <= POLICY.next_delay(25.0, 10.0, None, rng) <= 12.0


def test_it_backs_off_between_and_looks_often_near_the_expected_end() -> None:
    rng = random.Random(0)
    far = POLICY.next_delay(1000.0, 100.0, 3600.0, rng)
    near = POLICY.next_delay(3000.0, 100.0, 3600.0, rng)
    assert 160 <= far <= 240  # doubled, with jitter
    assert near <= 0.05 * 3600 * 1.2


def test_errors_back_off_within_bounds() -> None:
    rng = random.Random(0)
    assert 10.0 <= POLICY.after_error(None, rng) <= 24.0
    assert POLICY.after_error(290.0, rng) == 300.0


def test_completions_and_schedule() -> None:
    done = Completions()
    assert done.expected() is None
    for seconds in (10, 30, 20):
        done.add(seconds)
    assert done.expected() == 20
    schedule = Schedule()
    assert schedule.is_due("a", 5.0)
    schedule.plan("a", 5.0, 10.0)
    assert not schedule.is_due("a", 14.9) and schedule.is_due("a", 15.0)
    schedule.keep_only(set())
    assert schedule.due == {}
