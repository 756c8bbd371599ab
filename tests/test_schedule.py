"""The pure schedule maths: durations, cron, slots, due-ness, backoff."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.schedule import (
    Cron,
    DueState,
    Interval,
    Once,
    format_duration,
    is_due,
    parse_duration,
    parse_schedule,
    retry_at,
    satisfied_slot,
)

T0 = datetime(2026, 3, 1, 3, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)
DELAYS = (timedelta(seconds=60), timedelta(seconds=300), timedelta(seconds=900))


@pytest.mark.parametrize("text,expected", [
    ("10s", timedelta(seconds=10)), ("24h", timedelta(hours=24)), ("7d", timedelta(days=7)),
    ("5m", timedelta(minutes=5)), ("1h30m", timedelta(minutes=90)), ("250ms", timedelta(milliseconds=250)),
    ("2w", timedelta(weeks=2)), (" 0.5s ", timedelta(seconds=0.5)), (45, timedelta(seconds=45)),
])
def test_parse_duration_accepts_the_documented_forms(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["sometimes", "", "10", "-5s", "5 parsecs", "1h-", "h", "10s10", True, None,
                                  [1], "99999d", float("nan"), -1])
def test_parse_duration_refuses_anything_else(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=3650 * 86400))
def test_format_and_parse_duration_round_trip(seconds):
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@given(st.text(max_size=20))
def test_parse_duration_never_raises_anything_but_value_error(text):
    try:
        result = parse_duration(text)
    except ValueError:
        return
    assert timedelta(0) <= result <= timedelta(days=3650)


@pytest.mark.parametrize("expr", ["0 3 * * *", "*/5 * * * *", "0 0 1 * *", "30 2 * * mon-fri"])
def test_cron_expressions_parse(expr):
    assert Cron(expr).next_after(T0) > T0


@pytest.mark.parametrize("expr", ["61 * * * *", "* * *", "every day", "0 3 * * * *", "0 25 * * *"])
def test_bad_cron_expressions_are_refused(expr):
    with pytest.raises(ValueError):
        Cron(expr)


def test_cron_reads_its_timezone():
    berlin = Cron("0 3 * * *", "Europe/Berlin")
    assert berlin.next_after(T0) == datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        Cron("0 3 * * *", "Mars/Olympus")


def test_schedule_keys_exclude_each_other():
    with pytest.raises(ValueError):
        parse_schedule("24h", "0 3 * * *")
    assert parse_schedule("once") == Once()


def test_never_run_is_due():
    assert is_due(Interval(DAY), None, T0)
    assert is_due(Cron("0 3 * * *"), None, T0)


def test_interval_not_yet_due_then_exactly_due():
    state = DueState(last_slot_at=T0)
    assert not is_due(Interval(DAY), state, T0 + timedelta(hours=23))
    assert is_due(Interval(DAY), state, T0 + DAY)


def test_an_early_tick_within_tolerance_counts_for_the_slot():
    state = DueState(last_slot_at=T0 + timedelta(seconds=29))
    assert is_due(Interval(DAY), state, T0 + DAY + timedelta(seconds=1))


def test_a_success_keeps_the_grid_so_early_ticks_do_not_drift():
    slot = satisfied_slot(Interval(DAY), T0, T0 + DAY - timedelta(seconds=40))
    assert slot == T0 + DAY


def test_downtime_owes_one_catch_up_slot():
    schedule = Interval(DAY)
    late = T0 + timedelta(days=3, hours=11)
    slot = satisfied_slot(schedule, T0, late)
    assert slot == T0 + timedelta(days=3)
    assert not is_due(schedule, DueState(last_slot_at=slot), late + timedelta(hours=1))


def test_failure_backoff_then_the_schedule():
    schedule = Interval(DAY)
    starts = [retry_at(schedule, DELAYS, n, T0, T0 + timedelta(hours=1)) for n in (1, 2, 3, 4)]
    hour = T0 + timedelta(hours=1)
    assert starts == [hour + DELAYS[0], hour + DELAYS[1], hour + DELAYS[2], T0 + DAY]


def test_a_backoff_delay_is_waited_in_full():
    state = DueState(last_slot_at=T0, consecutive_failures=1, next_retry_at=T0 + timedelta(seconds=60))
    assert not is_due(Interval(DAY), state, T0 + timedelta(seconds=59))
    assert is_due(Interval(DAY), state, T0 + timedelta(seconds=60))


def test_once_is_due_only_until_it_succeeds():
    assert is_due(Once(), None, T0)
    assert not is_due(Once(), DueState(last_slot_at=T0), T0 + timedelta(days=400))


@pytest.mark.parametrize(("expr", "zone", "period"), [
    ("0 3 * * 1-5", "UTC", timedelta(days=1)),
    ("0 3 * * 0,1", "UTC", timedelta(days=1)),  # Sunday to Monday: the first gap from a Monday is 6 days
    ("0 12 * * 5", "UTC", timedelta(days=7)),
    ("*/5 9-17 * * *", "UTC", timedelta(minutes=5)),
    ("0,50 * * * *", "UTC", timedelta(minutes=10)),
    ("0 0 1 * *", "UTC", timedelta(days=28)),  # February, not the month sampled first
    ("0 0 1 */3 *", "UTC", timedelta(days=90)),
    ("0 3 * * 6,0", "Europe/Berlin", timedelta(hours=23)),  # a Saturday night losing its hour
])
def test_a_cron_period_is_its_shortest_gap_whatever_day_is_sampled(expr, zone, period):
    assert Cron(expr, zone).period() == period


def test_a_cron_period_bounds_the_tolerance_and_the_default_grace():
    dense, weekdays = Cron("0,50 * * * *"), Cron("0 3 * * 1-5")
    assert dense.tolerance() == timedelta(seconds=5) and weekdays.tolerance() == timedelta(seconds=5)
    assert Cron("* * * * *").tolerance() == timedelta(seconds=0.6)
