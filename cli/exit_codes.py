"""The only module that knows the numbers (sysexits.h where one fits)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from jobs.outcome import RunReport

EX_OK = 0  # ran, or skipped on purpose (not due, locked, disabled, paused)
EX_FAILED = 1  # the job failed (or `check` found a job overdue or failing)
EX_USAGE = 2  # bad command line
EX_TEMPFAIL = 75  # temporary failure: the database (or mail server) did not answer within the retry budget
EX_CONFIG = 78  # invalid configuration; nothing was touched
EX_SIGINT = 130  # 128 + SIGINT (2): interrupted by Ctrl-C
EX_SIGTERM = 143  # 128 + SIGTERM (15): interrupted by cron's timeout or Kubernetes (the signal module's
#                   import, with its enums, is not paid by a tick for these two numbers)

_SEVERITY = [EX_OK, EX_FAILED, EX_TEMPFAIL, EX_CONFIG, EX_SIGINT, EX_SIGTERM]


def for_signal(signum: int) -> int:
    return 128 + signum


def for_report(report: RunReport) -> int:
    """The report's code; with the run a busy tick owed after it (buffer_one), the worse of the two."""
    own = _own(report)
    return own if report.owed_run is None else worst([own, for_report(report.owed_run)])


def _own(report: RunReport) -> int:
    from jobs.outcome import RunStatus

    if report.status is RunStatus.INTERRUPTED:
        return for_signal(report.signal) if report.signal else EX_SIGTERM
    if report.config_error:
        return EX_CONFIG
    if report.status in (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED):
        return EX_TEMPFAIL if report.temporary else EX_FAILED
    return EX_OK


def worst(codes: list[int]) -> int:
    """run-due's exit code: the most serious of its jobs'."""
    return max(codes, key=lambda c: _SEVERITY.index(c) if c in _SEVERITY else len(_SEVERITY), default=EX_OK)
