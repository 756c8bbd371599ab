"""Durations, schedules and the pure due-ness rules (no clock, no I/O).

A schedule is a grid of slots: for an interval, the first successful run's
start plus whole multiples of the interval; for a cron expression, its fire
times. A successful run *satisfies* the latest slot at or before its start
(plus a small tolerance for ticks that arrive early), and the job is due
again at the next slot. This keeps a daily job on its phase, runs exactly
once per slot however often cron ticks, and owes one catch-up run after
any downtime (`catch_up = "one"`); under `catch_up = "none"` a slot older
than the job's catch-up window is skipped instead (jobs.catch_up).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

from .clock import NEVER
from .records import FrozenRecord

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")  # ASCII digits only: "１０s" is refused
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
MAX_DURATION = timedelta(days=3650)
MAX_TOLERANCE = timedelta(seconds=60)
CRON_TOLERANCE = timedelta(seconds=5)


def parse_duration(text: object) -> timedelta:
    """Parse "10s", "5m", "24h", "7d", "1h30m" (or a bare number of seconds)."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as \"10s\", \"24h\" or \"7d\"")
    if isinstance(text, (int, float)):
        if text != text or text < 0:
            raise ValueError("a duration must not be negative")
        seconds = float(text)
        if seconds > MAX_DURATION.total_seconds():
            raise ValueError("a duration must be at most 3650 days")
        return timedelta(seconds=seconds)
    if not isinstance(text, str):
        raise ValueError("expected a duration such as \"10s\", \"24h\" or \"7d\"")
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        raise ValueError("empty duration")
    if compact.startswith("-"):
        raise ValueError(f"a duration must not be negative: {text!r}")
    pos, total = 0, timedelta()
    for match in _DURATION.finditer(compact):
        if match.start() != pos:
            break
        amount = float(match.group(1))
        if amount * _UNITS[match.group(2)].total_seconds() > MAX_DURATION.total_seconds():
            raise ValueError(f"a duration must be at most 3650 days: {text!r}")
        total += amount * _UNITS[match.group(2)]
        pos = match.end()
        if total > MAX_DURATION:
            raise ValueError(f"a duration must be at most 3650 days: {text!r}")
    if pos != len(compact) or pos == 0:
        raise ValueError(f"not a duration: {text!r} (use e.g. \"10s\", \"5m\", \"24h\", \"7d\")")
    return total


def format_duration(value: timedelta) -> str:
    """The shortest exact form of a duration ("1d", "1h30m", "250ms"), which parse_duration reads back."""
    micros = round(value.total_seconds() * 1_000_000)
    if micros == 0:
        return "0s"
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, micros = divmod(micros, size * 1_000_000)
        if count:
            parts.append(f"{count}{unit}")
    if micros:
        parts.append(f"{micros / 1000:g}ms" if micros % 1000 == 0 else f"{micros / 1_000_000:.6f}".rstrip("0") + "s")
    return "".join(parts)


@dataclass(init=False, repr=False, eq=False)
class Interval(FrozenRecord):
    """A run every `every`, on a grid anchored at the slot of the last success."""

    every: timedelta

    def __init__(self, every: timedelta) -> None:
        if every <= timedelta(0):
            raise ValueError("an interval must be longer than zero")
        object.__setattr__(self, "every", every)

    def describe(self) -> str:
        return f"every {format_duration(self.every)}"

    def period(self) -> timedelta | None:
        return self.every

    def tolerance(self) -> timedelta:
        """Ticks from cron jitter by seconds; a 24 h job started at 03:00:29 still runs at 03:00:01."""
        return min(self.every / 100, MAX_TOLERANCE)

    def slot_at_or_before(self, anchor: datetime | None, t: datetime) -> datetime:
        """The latest grid point <= t; the grid starts at anchor (t itself when there is none)."""
        if anchor is None or anchor > t:
            return t
        steps = (t - anchor) // self.every
        return anchor + steps * self.every

    def slot_after(self, anchor: datetime | None, t: datetime) -> datetime:
        """The first grid point strictly after t."""
        if anchor is None:
            return t + self.every
        if anchor > t:
            return anchor
        return self.slot_at_or_before(anchor, t) + self.every


@dataclass(init=False, repr=False, eq=False)
class Cron(FrozenRecord):
    """A run at each fire time of a five-field cron expression, in a time zone."""

    expression: str
    timezone: str = "UTC"

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        object.__setattr__(self, "expression", expression)
        object.__setattr__(self, "timezone", timezone)
        self._check()

    def _check(self) -> None:
        from cronsim import CronSim, CronSimError

        fields = self.expression.split()
        if len(fields) != 5:
            raise ValueError(f"a cron expression has 5 fields, got {len(fields)}: {self.expression!r}")
        try:
            it = CronSim(self.expression, datetime(2000, 1, 1, tzinfo=timezone.utc))
            next(it)
        except (CronSimError, StopIteration, ValueError) as exc:
            raise ValueError(f"not a cron expression: {self.expression!r} ({exc})") from None
        _zone(self.timezone)

    def describe(self) -> str:
        suffix = "" if self.timezone == "UTC" else f" ({self.timezone})"
        return f"cron {self.expression}{suffix}"

    def _local(self, t: datetime) -> datetime:
        return t.astimezone(_zone(self.timezone))

    def next_after(self, t: datetime) -> datetime:
        from cronsim import CronSim

        return next(CronSim(self.expression, self._local(t))).astimezone(timezone.utc)

    def latest_at_or_before(self, t: datetime) -> datetime | None:
        from cronsim import CronSim

        try:
            fire = next(CronSim(self.expression, self._local(t + timedelta(microseconds=1)), reverse=True))
        except StopIteration:
            return None
        return fire.astimezone(timezone.utc)

    def period(self) -> timedelta | None:
        """The shortest gap between two fires: what the tolerance must stay under and the default grace
        is clamped from. Weekday and monthly schedules have uneven gaps, so one sampled gap depends on
        the day sampled (`0 3 * * 6,0` sampled on a Monday gives its 1-day gap, on a Sunday its 6-day
        one); PERIOD_SAMPLE fires from a Monday of a common year hold the shortest gap of any minute,
        hour, weekday or month pattern. A DST day's 23 hours is not sought: grace and tolerance are
        clamped far below a day."""
        return _shortest_gap(self.expression, self.timezone)

    def tolerance(self) -> timedelta:
        """Cron ticks arrive after their fire time; allow only for clock skew between hosts."""
        return min(_shortest_gap(self.expression, self.timezone) / 100, CRON_TOLERANCE)

    def slot_at_or_before(self, anchor: datetime | None, t: datetime) -> datetime:
        fire = self.latest_at_or_before(t)
        return fire if fire is not None else t

    def slot_after(self, anchor: datetime | None, t: datetime) -> datetime:
        return self.next_after(t)


PERIOD_SAMPLE = 64
"""Fires sampled for a cron schedule's period (about 6 ms, paid once per expression and process): enough
for two weeks of a daily schedule, a year of a monthly one (February included)."""


@functools.lru_cache(maxsize=64)
def _shortest_gap(expression: str, zone: str) -> timedelta:
    from cronsim import CronSim

    start = datetime(2001, 1, 1, tzinfo=_zone(zone))  # a Monday of a common year
    fires = CronSim(expression, start)
    previous = next(fires)
    shortest: timedelta | None = None
    for _ in range(PERIOD_SAMPLE):
        try:
            fire = next(fires)
        except StopIteration:
            break
        gap = fire.astimezone(timezone.utc) - previous.astimezone(timezone.utc)
        shortest = gap if shortest is None else min(shortest, gap)
        if fire - start > timedelta(days=400):
            break
        previous = fire
    return shortest if shortest is not None else timedelta(days=366)


@dataclass(init=False, repr=False, eq=False)
class Once(FrozenRecord):
    """Due until it first succeeds (admin seeding); --force runs it again."""

    def describe(self) -> str:
        return "once"

    def period(self) -> timedelta | None:
        return None

    def tolerance(self) -> timedelta:
        return timedelta(0)

    def slot_at_or_before(self, anchor: datetime | None, t: datetime) -> datetime:
        return t

    def slot_after(self, anchor: datetime | None, t: datetime) -> datetime:
        return NEVER if anchor is not None else t


Schedule = Interval | Cron | Once


def parse_schedule(interval: object = None, cron: object = None, tz: object = None) -> Schedule:
    """The schedule from the config keys; raises ValueError naming what is wrong."""
    if interval is not None and cron is not None:
        raise ValueError("set either interval or cron, not both")
    if cron is not None:
        if not isinstance(cron, str):
            raise ValueError("cron must be a string such as \"0 3 * * *\"")
        return Cron(cron.strip(), tz if isinstance(tz, str) else "UTC")
    if isinstance(interval, str) and interval.strip().lower() == "once":
        return Once()
    if interval is None:
        raise ValueError("no schedule")
    return Interval(parse_duration(interval))


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return timezone.utc
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone: {name!r} (use an IANA name such as \"Europe/Berlin\")") from None


@dataclass(init=False, repr=False, eq=False)
class DueState(FrozenRecord):
    """What the tracking row says, reduced to what due-ness needs."""

    last_slot_at: datetime | None = None
    consecutive_failures: int = 0
    next_retry_at: datetime | None = None
    backoff_steps: int = 3

    def __init__(self, last_slot_at: datetime | None = None, consecutive_failures: int = 0,
                 next_retry_at: datetime | None = None, backoff_steps: int = 3) -> None:
        object.__setattr__(self, "last_slot_at", last_slot_at)
        object.__setattr__(self, "consecutive_failures", consecutive_failures)
        object.__setattr__(self, "next_retry_at", next_retry_at)
        object.__setattr__(self, "backoff_steps", backoff_steps)

    @property
    def in_backoff(self) -> bool:
        """A failed run's retry is waited in full and never skipped: it is the job's backoff, not a catch-up."""
        return 0 < self.consecutive_failures <= self.backoff_steps and self.next_retry_at is not None


def next_due(schedule: Schedule, state: DueState | None) -> datetime | None:
    """When the job is next owed a run; None means right away (never succeeded)."""
    if state is not None and state.consecutive_failures > 0 and state.next_retry_at is not None:
        return state.next_retry_at
    if state is None or state.last_slot_at is None:
        return None
    return schedule.slot_after(state.last_slot_at, state.last_slot_at)


def is_due(schedule: Schedule, state: DueState | None, now: datetime) -> bool:
    """Due when never run, when a slot is owed, or when a failed run's retry time has come.

    Slots allow a tick to be a little early; a backoff delay is waited in full.
    """
    due_at = next_due(schedule, state)
    if due_at is None:
        return True
    in_backoff = state is not None and 0 < state.consecutive_failures <= state.backoff_steps
    early = timedelta(0) if in_backoff else schedule.tolerance()
    return now + early >= due_at


def first_slot(schedule: Schedule, known_since: datetime | None) -> datetime | None:
    """When a job that never succeeded was first owed a run: at once for an interval (it is due as soon as
    the database knows it), the first fire time for cron. None when unknown, and for a one-shot job
    (run by hand at deploy time, never by a tick)."""
    if known_since is None or isinstance(schedule, Once):
        return None
    if isinstance(schedule, Cron):
        return schedule.next_after(known_since - timedelta(microseconds=1))
    return known_since


def satisfied_slot(schedule: Schedule, last_slot_at: datetime | None, started_at: datetime) -> datetime:
    """The slot a successful run that started at started_at fulfils (for the grid anchor)."""
    if last_slot_at is None and isinstance(schedule, Interval):
        return started_at
    slot = schedule.slot_at_or_before(last_slot_at, started_at + schedule.tolerance())
    if last_slot_at is not None and slot < last_slot_at:
        return last_slot_at
    return slot


def retry_at(
    schedule: Schedule,
    delays: tuple[timedelta, ...],
    failures: int,
    last_slot_at: datetime | None,
    started_at: datetime,
) -> datetime:
    """After the n-th failure in a row: the n-th backoff delay, then the schedule's next slot."""
    if 1 <= failures <= len(delays):
        return started_at + delays[failures - 1]
    return schedule.slot_after(last_slot_at, started_at)
