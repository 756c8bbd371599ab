"""How long the run history keeps each outcome: the [history] defaults and each job's `history` key.

A job's `history` is either the older string (`"work"` or `"all"`: which finished runs get a row at all)
or a table, `[jobs.X.history]` or `history.keep_succeeded = "7d"` under `[jobs.X]`, with `runs`,
`keep_succeeded` and `keep_failed`. Successes are kept a short while (they say little once the tracking
row has the last one); every run that did not succeed is kept longer, as the evidence an operator reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta

from .errors import ConfigError
from .records import FrozenRecord

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any

RUNS_CHOICES = ("work", "all")
JOB_KEYS = ("runs", "keep_succeeded", "keep_failed")
GLOBAL_KEYS = ("retention", "keep_succeeded", "keep_failed")
MINIMUM = timedelta(hours=1)  # shorter would prune runs an operator is still looking at

Duration = Callable[..., timedelta]  # jobs.config._duration: (value, where, *, minimum) -> timedelta


@dataclass(init=False, repr=False, eq=False)
class HistoryPolicy(FrozenRecord):
    """runs: which finished runs keep a row ("work": see tracking.kept; "all"). keep_succeeded: how long a
    succeeded run's row stays; keep_failed: how long every other finished run's row stays (failed,
    timed_out, abandoned, interrupted, duplicate_slot)."""

    runs: str = "work"
    keep_succeeded: timedelta = timedelta(days=14)
    keep_failed: timedelta = timedelta(days=90)

    def __init__(self, runs: str = "work", keep_succeeded: timedelta = timedelta(days=14),
                 keep_failed: timedelta = timedelta(days=90)) -> None:
        object.__setattr__(self, "runs", runs)
        object.__setattr__(self, "keep_succeeded", keep_succeeded)
        object.__setattr__(self, "keep_failed", keep_failed)

    @property
    def longest(self) -> timedelta:
        return max(self.keep_succeeded, self.keep_failed)


def defaults(table: Mapping[str, Any], duration: Duration) -> HistoryPolicy:
    """The [history] section: every job's default. `retention`, the older key, sets both unless the
    outcome's own key is given, so a config written before keep_* existed keeps its meaning."""
    for key in table:
        if key not in GLOBAL_KEYS:
            raise ConfigError(f"[history]: unknown key {key!r} (known: {', '.join(GLOBAL_KEYS)})")
    base = HistoryPolicy()
    retention = duration(table["retention"], "[history] retention", minimum=MINIMUM) if "retention" in table \
        else None
    return HistoryPolicy(
        runs=base.runs,
        keep_succeeded=_keep(table, "keep_succeeded", "[history] keep_succeeded", retention or base.keep_succeeded,
                             duration),
        keep_failed=_keep(table, "keep_failed", "[history] keep_failed", retention or base.keep_failed, duration),
    )


def for_job(value: Any, where: str, default: HistoryPolicy, duration: Duration) -> HistoryPolicy:
    """A job's `history` key (`where` is its `[jobs.NAME]`), over the [history] defaults."""
    if value is None:
        return default
    if isinstance(value, str):
        return replace(default, runs=_runs(value, f"{where} history"))
    if not isinstance(value, dict):
        raise ConfigError(f"{where} history: expected \"work\", \"all\" or a table of {', '.join(JOB_KEYS)}, "
                          f"got {value!r}")
    for key in value:
        if key not in JOB_KEYS:
            raise ConfigError(f"{where} history: unknown key {key!r} (known: {', '.join(JOB_KEYS)})")
    return HistoryPolicy(
        runs=_runs(value.get("runs", default.runs), f"{where} history.runs"),
        keep_succeeded=_keep(value, "keep_succeeded", f"{where} history.keep_succeeded", default.keep_succeeded,
                             duration),
        keep_failed=_keep(value, "keep_failed", f"{where} history.keep_failed", default.keep_failed, duration),
    )


def _runs(value: Any, where: str) -> str:
    if value not in RUNS_CHOICES:
        raise ConfigError(f"{where}: must be one of {', '.join(RUNS_CHOICES)}, got {value!r}")
    return str(value)


def _keep(table: Mapping[str, Any], key: str, where: str, default: timedelta, duration: Duration) -> timedelta:
    return duration(table[key], where, minimum=MINIMUM) if key in table else default
