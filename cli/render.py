"""The only module that prints: rich tables for people, plain lines for cron, JSON for machines."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.outcome import RunReport


def redact(text: str) -> str:
    """Imported late so the shadowing guard can report before any `jobs` package is imported."""
    from jobs.secrets import redact as mask

    return mask(text)


def is_terminal() -> bool:
    return sys.stdout.isatty()


def error(message: str, *, masked: bool = True) -> None:
    """One clear line on stderr (masked=False only for the start-up guard, before `jobs` may be imported)."""
    from .logs import error_line

    print(error_line(" ".join(str(message).split()), masked=masked), file=sys.stderr)


def line(text: str) -> None:
    print(redact(text))


def json_out(obj: Any) -> None:
    print(redact(json.dumps(obj, default=_default, sort_keys=False)))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


WRAPPING = ("error", "last error", "description")
_WRAP_MIN = 16
_TIME = re.compile(r"^\d{4}-(\d\d-\d\d \d\d:\d\d):\d\d$")


def table(title: str, columns: list[str], rows: Iterable[list[str]], *, styles: Mapping[str, str] | None = None,
          drop_first: Sequence[str] = (), times: Sequence[str] = ()) -> None:
    """A rich table on a terminal, tab-free plain columns otherwise.

    At a terminal the table fits its width: first the `times` columns lose their year and seconds, then
    the columns named in `drop_first` are left out, in that order, until it does; every other column
    keeps its full width (a job name or a state is never cut).
    """
    rows = [[redact(str(c)) for c in row] for row in rows]
    if is_terminal():
        from rich.console import Console
        from rich.table import Table

        console = Console()
        natural = _natural_widths(columns, rows)
        if _needed(columns, natural, range(len(columns))) > console.width and times:
            rows = [[_short_time(c) if columns[i] in times else c for i, c in enumerate(row)] for row in rows]
            natural = _natural_widths(columns, rows)
        shown = _fitting(columns, natural, console.width, drop_first)
        t = Table(title=title, title_justify="left")
        for i in shown:
            wraps = columns[i] in WRAPPING
            t.add_column(columns[i], no_wrap=not wraps, min_width=None if wraps else natural[i],
                         overflow="fold" if wraps else "ellipsis")
        for row in rows:
            t.add_row(*[_style(row[i], styles) for i in shown])
        console.print(t)
        return
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _natural_widths(columns: list[str], rows: list[list[str]]) -> list[int]:
    from rich.cells import cell_len

    return [max([cell_len(c)] + [cell_len(r[i]) for r in rows]) for i, c in enumerate(columns)]


def _short_time(text: str) -> str:
    """`2026-12-06 01:43:37` → `12-06 01:43`; anything else as it is."""
    match = _TIME.match(text)
    return match.group(1) if match else text


def _needed(columns: list[str], natural: list[int], shown: Iterable[int]) -> int:
    """Cells the table takes (rich's default box: 3 per column plus 1; wrapping columns at their minimum)."""
    shown = list(shown)
    return sum(min(natural[i], _WRAP_MIN) if columns[i] in WRAPPING else natural[i] for i in shown) \
        + 3 * len(shown) + 1


def _fitting(columns: list[str], natural: list[int], width: int, drop_first: Sequence[str]) -> list[int]:
    """The indexes of the columns that fit `width`, leaving out those of `drop_first` in order."""
    shown = list(range(len(columns)))
    for name in drop_first:
        if _needed(columns, natural, shown) <= width:
            break
        if name in columns:
            shown.remove(columns.index(name))
    return shown


def _style(cell: str, styles: Mapping[str, str] | None) -> str:
    style = (styles or STATUS_STYLES).get(cell)
    return f"[{style}]{cell}[/]" if style else cell.replace("[", r"\[")


STATUS_STYLES = {
    "succeeded": "green",
    "ok": "green",
    "failed": "bold red",
    "failing": "bold red",
    "overdue": "bold red",
    "timed_out": "red",
    "abandoned": "red",
    "duplicate_slot": "yellow",
    "interrupted": "yellow",
    "running": "cyan",
    "paused": "yellow",
    "disabled": "dim",
}


def run_report(report: RunReport, *, as_json: bool, quiet: bool, exit_code: int) -> None:
    """What a job invocation prints on stdout (logs go to stderr separately)."""
    if as_json:
        json_out({**report.as_dict(), "exit_code": exit_code})
        return
    if quiet or not is_terminal():
        return
    summary(report)


def run_due_json(reports: Sequence[RunReport], codes: Sequence[int], code: int) -> dict[str, Any]:
    """`run-due --json`: the worst exit code, and every job's report with its own."""
    return {"exit_code": code, "jobs": [{**r.as_dict(), "exit_code": c} for r, c in zip(reports, codes)]}


def summary(report: RunReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    status = report.status.value
    t = Table(title=f"{report.job}", title_justify="left", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("status", _style(status, None))
    from jobs.outcome import RunStatus

    if report.status.is_skip:
        if report.next_due_at:
            t.add_row("next due", when(report.next_due_at))
        for detail in report.details:
            t.add_row("note", detail)
        console.print(t)
        return
    if report.run_id is not None:
        t.add_row("run", str(report.run_id))
    t.add_row("trigger", report.trigger.value)
    t.add_row("duration", seconds(report.duration_seconds))
    for key, value in sorted(report.counts.items()):
        t.add_row(key, f"{value:,}")
    if report.transactions:
        t.add_row("transactions", f"{report.transactions} (longest {report.longest_transaction_seconds:.3f}s)")
    if report.error:
        t.add_row("error", redact(report.error).replace("[", r"\["))
    if report.next_due_at and report.status is not RunStatus.DRY_RUN:
        t.add_row("next due", when(report.next_due_at))
    console.print(t)
    for detail in report.details[:50]:
        console.print(redact(detail), markup=False, highlight=False)
    if len(report.details) > 50:
        console.print(f"... and {len(report.details) - 50} more")
    if report.owed_run is not None:
        summary(report.owed_run)


def plain_details(report: RunReport) -> None:
    """A dry run under cron lists what it would change as plain lines."""
    for detail in report.details:
        line(detail)


class RichProgress:
    """A progress bar on stderr for long work at a terminal."""

    def __init__(self, job: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn(f"[bold]{job}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self._task = self._progress.add_task(job, total=None)
        self._started = False

    def total(self, n: int | None) -> None:
        self._ensure()
        self._progress.update(self._task, total=n)

    def advance(self, n: int) -> None:
        self._ensure()
        self._progress.advance(self._task, n)

    def _ensure(self) -> None:
        if not self._started:
            self._progress.start()
            self._started = True

    def close(self) -> None:
        if self._started:
            self._progress.stop()
