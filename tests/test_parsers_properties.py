"""Properties of the duration and schedule parsers (hypothesis): whatever the input, a value in range
or a ValueError naming the problem, never another exception; what they accept means what it says."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.errors import ConfigError
from jobs.schedule import MAX_DURATION, Cron, parse_duration, parse_schedule
from jobs.settings import read_env

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
anything = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30),
                     st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(anything)
def test_parse_duration_gives_a_bounded_duration_or_a_value_error_for_any_value(value):
    try:
        result = parse_duration(value)
    except ValueError as exc:
        assert str(exc)
        return
    assert timedelta(0) <= result <= MAX_DURATION


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=10**16), st.sampled_from(sorted(UNITS))),
                min_size=1, max_size=4), st.sampled_from(["", " "]))
def test_a_duration_in_the_grammar_means_the_sum_of_its_parts(parts, sep):
    text = sep.join(f"{n}{unit}" for n, unit in parts)
    seconds = sum(n * UNITS[unit] for n, unit in parts)
    if seconds > MAX_DURATION.total_seconds():
        with pytest.raises(ValueError, match="at most 3650 days"):
            parse_duration(text)
    else:
        assert parse_duration(text).total_seconds() == pytest.approx(seconds, abs=1e-3)


@given(st.text(alphabet="０１２３４５６７８９٠١٢٣", min_size=1, max_size=3), st.sampled_from(sorted(UNITS)))
def test_non_ascii_digits_are_not_a_duration(digits, unit):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(digits + unit)


@pytest.mark.parametrize("text", ["99999999999999d", "9" * 400 + "s", "3651d", "522w1d"])
def test_a_duration_past_ten_years_is_refused_not_overflowed(text):
    with pytest.raises(ValueError, match="at most 3650 days"):
        parse_duration(text)


FIELDS = [(0, 59), (0, 23), (1, 28), (1, 12), (0, 6)]


@settings(max_examples=200, deadline=None)
@given(st.tuples(*[st.integers(lo, hi) for lo, hi in FIELDS]), st.integers(0, 4),
       st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2090, 1, 1)))
def test_a_cron_expression_from_valid_fields_fires_when_its_fields_say(values, star_from, start):
    # Fields from `star_from` on are "*": e.g. "30 4 * * *"; the day-of-week field is always "*" unless it
    # is the only restricted day field, so the meaning stays "all given fields match".
    fields = [str(v) if i < star_from and i < 4 else "*" for i, v in enumerate(values)]
    cron = parse_schedule(cron=" ".join(fields))
    assert isinstance(cron, Cron)
    start = start.replace(tzinfo=timezone.utc)
    fire = cron.next_after(start)
    assert fire > start
    got = (fire.minute, fire.hour, fire.day, fire.month)
    assert all(f == "*" or int(f) == g for f, g in zip(fields, got))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="0123456789*/,-LW#?abcJANmonSUN@ \t", min_size=1, max_size=6),
                min_size=0, max_size=7))
def test_any_cron_text_parses_or_raises_a_value_error(fields):
    try:
        parse_schedule(cron=" ".join(fields))
    except ValueError as exc:
        assert str(exc)


@settings(max_examples=100, deadline=None)
@given(anything, anything)
def test_any_interval_or_cron_value_parses_or_raises_a_value_error(interval, cron):
    try:
        parse_schedule(interval=interval, cron=cron)
    except ValueError as exc:
        assert str(exc)


def test_an_environment_value_that_was_not_utf8_is_a_configuration_error():
    with pytest.raises(ConfigError, match="CRONWARDEN_DATABASE_URL: not valid UTF-8"):
        read_env("CRONWARDEN_DATABASE_URL", {"CRONWARDEN_DATABASE_URL": "sqlite:///caf\udce9.db"})
