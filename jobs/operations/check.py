"""`check`, for monitoring: the jobs that are overdue, failing or stuck, and each extension's alarm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .status import assess

if TYPE_CHECKING:
    from ..app import App
    from ..extensions import Alarm
    from ..health import JobHealth


@dataclass(frozen=True)
class CheckResult:
    jobs: list[JobHealth]
    alarms: list[Alarm]

    @property
    def alarming(self) -> list[JobHealth]:
        return [j for j in self.jobs if j.alarming]

    @property
    def ok(self) -> bool:
        return not self.alarming and not any(a.raised for a in self.alarms)

    def as_dict(self) -> dict[str, Any]:
        """Without ok and exit_code, which the caller puts first."""
        return {"jobs": [{"job": j.name, "state": j.state, "next_due_at": j.next_due_at,
                          "overdue_seconds": j.overdue_seconds, "consecutive_failures": j.consecutive_failures,
                          "last_error": j.last_error, "holder_host": j.holder_host, "holder_pid": j.holder_pid,
                          "holder_run_id": j.holder_run_id} for j in self.jobs],
                **{a.key: a.data for a in self.alarms}}


def check(app: App) -> CheckResult:
    from .. import clock
    from ..registry import builtin_extensions

    jobs = assess(app)
    now = clock.utcnow()
    return CheckResult(jobs, [ext.alarms(app, now) for ext in builtin_extensions() if ext.alarms is not None])
