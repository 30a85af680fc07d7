"""Route decisions and the batch path's estimate (services/intake/routing.py), no network."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchbus.services.intake.routing import (
    API_WINDOW_SECONDS,
    BatchHistory,
    RoutePolicy,
    Router,
    decide,
    estimate_seconds,
    nearest_rank,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = RoutePolicy(max_wait_seconds=120, quantile=0.95, margin=1.5, min_history=10)
HOUR = 3600.0


def test_nearest_rank_is_an_observed_value() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert nearest_rank(values, 0.95) == 19
    assert nearest_rank(values, 1.0) == 20
    assert nearest_rank(values, 0.5) == 10
    assert nearest_rank([7.0], 0.95) == 7


def test_too_little_history_assumes_the_api_window() -> None:
    assert estimate_seconds([], POLICY) == 120 + API_WINDOW_SECONDS
    assert estimate_seconds([60.0] * 9, POLICY) == 120 + API_WINDOW_SECONDS


def test_enough_history_uses_the_quantile_times_the_margin() -> None:
    durations = [600.0] * 19 + [3000.0]  # the 95th percentile by nearest rank is 600
    assert estimate_seconds(durations, POLICY) == pytest.approx((120 + 600) * 1.5)
    durations = [600.0] * 18 + [3000.0] * 2
    assert estimate_seconds(durations, POLICY) == pytest.approx((120 + 3000) * 1.5)


def test_history_never_estimates_worse_than_the_api_window() -> None:
    assert estimate_seconds([20 * HOUR] * 10, POLICY) == 120 + API_WINDOW_SECONDS


@given(st.lists(st.floats(min_value=0, max_value=2 * API_WINDOW_SECONDS), max_size=40))
def test_estimate_is_at_least_the_flush_window_and_at_most_the_ceiling(durations: list[float]) -> None:
    estimate = estimate_seconds(durations, POLICY)
    assert POLICY.max_wait_seconds <= estimate <= POLICY.max_wait_seconds + API_WINDOW_SECONDS


@pytest.mark.parametrize(("route", "deadline", "want"), [
    ("auto", None, ("batch", "no_deadline")),
    ("auto", NOW + timedelta(hours=1), ("realtime", "deadline_near")),
    ("auto", NOW + timedelta(days=3), ("batch", "deadline_far")),
    ("realtime", None, ("realtime", "requested")),
    ("realtime", NOW + timedelta(days=3), ("realtime", "requested")),
    ("batch", NOW + timedelta(minutes=5), ("batch", "requested")),
    ("auto", NOW, (None, "deadline_passed")),
    ("batch", NOW - timedelta(seconds=1), (None, "deadline_passed")),
    ("realtime", NOW - timedelta(days=1), (None, "deadline_passed")),
])
def test_decide(route: str, deadline: datetime | None, want: tuple[str | None, str]) -> None:
    decision = decide(route, deadline, NOW, estimate=24 * HOUR)  # type: ignore[arg-type]
    assert (decision.route, decision.reason) == want


def test_a_deadline_exactly_at_the_estimate_goes_by_batch() -> None:
    assert decide("auto", NOW + timedelta(hours=2), NOW, 2 * HOUR).route == "batch"
    assert decide("auto", NOW + timedelta(hours=2), NOW, 2 * HOUR + 1).route == "realtime"


def test_history_counts_a_batch_once_and_forgets_after_the_window() -> None:
    history = BatchHistory()
    history.add("b1", NOW - timedelta(hours=30), NOW - timedelta(hours=25))  # ended too long ago
    history.add("b2", NOW - timedelta(minutes=20), NOW - timedelta(minutes=10))
    history.add("b2", NOW - timedelta(minutes=20), NOW - timedelta(minutes=10))  # a replay
    assert history.durations(NOW) == [600.0]
    assert len(history) == 1


def test_router_learns_from_history_and_routes_by_it() -> None:
    history = BatchHistory()
    router = Router(history, POLICY, refresh_seconds=5)
    deadline = NOW + timedelta(hours=2)
    assert router.decide("auto", deadline, NOW).route == "realtime"  # no history: 24 h
    for i in range(10):
        history.add(f"b{i}", NOW - timedelta(minutes=30), NOW - timedelta(minutes=20))
    # The estimate is kept for `refresh_seconds`, then recomputed: (120 + 600) x 1.5 = 18 min.
    assert router.decide("auto", deadline, NOW + timedelta(seconds=1)).route == "realtime"
    later = NOW + timedelta(seconds=6)
    assert router.estimate(later) == pytest.approx(1080)
    assert router.decide("auto", deadline, later).route == "batch"
    assert router.decide("auto", later + timedelta(minutes=17), later).route == "realtime"
