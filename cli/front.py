"""The console script's first step: decide a tick that does nothing before importing the CLI framework.

Most invocations of a job from cron or a CronJob find it not due, paused, disabled or locked by another
process. Those are decided here with the standard library, the configuration, the schedule maths, the
database driver and the lock (jobs/tick.py); everything else (a run, another command, a terminal to draw
on, an option or setting this module does not know, any error or doubt) goes to the full CLI (cli/app.py),
unchanged. CRONWARDEN_QUICK_PATH=off sends every invocation there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

QUICK_PATH_ENV = "CRONWARDEN_QUICK_PATH"
_VALUED = {"--config": "config", "--database-url": "database_url", "--log-format": "log_format"}
_OBSERVER_ENV = ("CRONWARDEN_METRICS_FILE", "CRONWARDEN_PUSHGATEWAY")


def shadowing_problem() -> str | None:
    """Another top-level `jobs` package (PYTHONPATH, a project's own) would replace ours silently."""
    from importlib.util import find_spec

    spec = find_spec("jobs")
    here = Path(__file__).resolve().parent.parent
    if spec is None or spec.origin is None or Path(spec.origin).resolve().parent.parent != here:
        return "another package named 'jobs' shadows cronwarden's; check PYTHONPATH and the current directory"
    return None


def main(argv: list[str] | None = None, prog_name: str = "cronwarden") -> int:
    """Entry point of the console script and of `python -m cli`; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get(QUICK_PATH_ENV, "").lower() not in ("off", "0", "no", "false"):
        code = quick(args)
        if code is not None:
            return code
    from .app import main as full

    return full(args, prog_name=prog_name)


def quick(args: list[str]) -> int | None:
    """The exit code of a scheduled tick that does nothing, printed as the full CLI prints it; None to hand over."""
    line = _parse(args)
    if line is None or sys.stdout.isatty() or any(os.environ.get(k) is not None for k in _OBSERVER_ENV):
        return None
    if shadowing_problem() is not None:
        return None
    from jobs.tick import HandOver

    try:
        reports = _decide(line)
    except (HandOver, Exception):  # noqa: BLE001 - any doubt, any error: the full CLI decides and explains
        return None
    if reports is None:
        return None
    return _show(line, reports)


def _parse(args: list[str]) -> dict | None:
    """`[global options] JOB|run-due [global options] [--json]`, and nothing else; None for any other line."""
    line: dict = {"config": None, "database_url": None, "log_format": "text", "quiet": False, "json": False,
                  "job": None}
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _VALUED:
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            line[_VALUED[name]] = value
        elif arg in ("--quiet", "-q"):
            line["quiet"] = True
        elif arg == "--json":
            line["json"] = True
        elif arg.startswith("-") or line["job"] is not None:
            return None
        else:
            line["job"] = arg
        i += 1
    if line["job"] is None or line["log_format"] not in ("text", "json"):
        return None
    return line


def _decide(line: dict):
    """Load the configuration as the full CLI does (built-in jobs only) and ask jobs.tick."""
    from jobs import clock, dburl, tick
    from jobs import config as config_mod
    from jobs.due import recurring
    from jobs.observe import configured
    from jobs.registry import builtin_specs

    specs = builtin_specs()
    if line["job"] not in {spec.name for spec in specs} | {"run-due"}:
        return None
    path = config_mod.find_config_file(line["config"], os.environ)
    raw = config_mod.read_toml(path)
    if config_mod.referenced_jobs(raw) - {spec.name for spec in specs}:
        return None
    config = config_mod.load(raw, specs, database_url=line["database_url"], source=path, check_url=dburl.check)
    if any(job.ping_url for job in config.jobs.values()) or configured(os.environ):
        return None
    names = recurring(config) if line["job"] == "run-due" else [line["job"]]
    return tick.decide(config, names, clock.utcnow())


def _show(line: dict, reports: list) -> int:
    """What cli/job_commands.py prints for the same reports: the lock lines on stderr, --json on stdout.
    Logging and JSON are imported only when there is a line to write (a not-due tick writes nothing)."""
    from jobs.outcome import RunStatus

    from . import exit_codes

    locked = [report for report in reports if report.status is RunStatus.LOCKED]
    if locked:
        from jobs.due import locked_line
        from jobs.execution import job_logger

        from . import logs
        from .state import State

        state = State((), False, log_format=line["log_format"], quiet=line["quiet"])
        logs.setup(state.log_format, state.log_level())
        for report in locked:
            job_logger(report.job, None).info(locked_line(report))
    codes = [exit_codes.for_report(report) for report in reports]
    code = exit_codes.worst(codes)
    if line["json"]:
        from . import render

        if line["job"] != "run-due":
            render.run_report(reports[0], as_json=True, quiet=line["quiet"], exit_code=code)
        else:
            render.json_out(render.run_due_json(reports, codes, code))
    return code


def run() -> None:
    raise SystemExit(main())
