"""`--since` parsing and the ages `batchbus status` prints."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from batchbus.cli.durations import describe_age, parse_duration, parse_since

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("90s", timedelta(seconds=90)), ("30m", timedelta(minutes=30)), ("1h", timedelta(hours=1)),
    ("2d", timedelta(days=2)), ("1w", timedelta(weeks=1)), ("1h30m", timedelta(minutes=90)),
    ("1.5h", timedelta(minutes=90)), (" 2D ", timedelta(days=2)),
])
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "1", "h", "1x", "-1h", "1h 30m", "0s", "0m0s", "1h-"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_since_a_duration_counts_back_from_now() -> None:
    assert parse_since("1h30m", NOW) == NOW - timedelta(minutes=90)


def test_since_an_rfc3339_time_is_taken_as_given() -> None:
    assert parse_since("2025-05-31T09:00:00Z", NOW) == datetime(2025, 5, 31, 9, tzinfo=UTC)
    moment = parse_since("2025-05-31T11:00:00+02:00", NOW)
    assert moment == datetime(2025, 5, 31, 11, tzinfo=timezone(timedelta(hours=2)))
    assert moment == datetime(2025, 5, 31, 9, tzinfo=UTC)


def test_since_a_time_without_a_zone_is_refused_rather_than_guessed() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        parse_since("2025-05-31T09:00:00", NOW)


def test_since_nonsense_names_the_duration_form() -> None:
    with pytest.raises(ValueError, match="not a duration such as 30m"):
        parse_since("yesterday", NOW)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (42.9, "42s"), (187, "3m 07s"), (7500, "2h 05m"), (3 * 86400 + 4 * 3600, "3d 4h"),
    (-5, "0s"),
])
def test_ages(seconds: float, text: str) -> None:
    assert describe_age(seconds) == text
