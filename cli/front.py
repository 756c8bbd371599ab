"""The console script's first step: decide a tick that does nothing, or run a plain line, before importing
the CLI framework.

Most invocations of a job from cron or a CronJob find it not due, paused, disabled or locked by another
process. Those are decided here with the standard library, the configuration, the schedule maths, the
database driver and the lock (jobs/tick.py). A run of a built-in job, `run-due` and `work` on a line this
module fully understands, with nobody at a terminal, run here through the same functions the typer commands
call (cli/actions.py, cli/errors.guarded), so cron pays for neither typer nor pydantic. Everything else
(another command, a terminal to draw on, an option or setting this module does not know, --help, a usage
error) goes to the full CLI (cli/app.py), unchanged. CRONWARDEN_QUICK_PATH=off sends every invocation there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from jobs.outcome import RunReport

QUICK_PATH_ENV = "CRONWARDEN_QUICK_PATH"
_VALUED = {"--config": "config", "--database-url": "database_url", "--log-format": "log_format",
           "--metrics-file": "metrics_file", "--pushgateway": "pushgateway"}
_FLAGS = {"--quiet": "quiet", "-q": "quiet", "--verbose": "verbose", "-v": "verbose", "--json": "json"}
_JOB_FLAGS = {"--force": "force", "--dry-run": "dry_run"}
# `work`'s options: (key, parse, lowest, highest), as its typer command bounds them
_WORK_VALUED = {"--max-jobs": ("max_jobs", int, 1, None), "--max-seconds": ("max_seconds", float, 0.1, None),
                "--batch-size": ("batch_size", int, 1, 1000)}
_OBSERVER_ENV = {"CRONWARDEN_METRICS_FILE": "metrics_file", "CRONWARDEN_PUSHGATEWAY": "pushgateway"}


def shadowing_problem() -> str | None:
    """Another top-level `jobs` package (PYTHONPATH, a project's own) would replace ours silently."""
    from importlib.util import find_spec

    spec = find_spec("jobs")
    here = Path(__file__).resolve().parent.parent
    if spec is None or spec.origin is None or Path(spec.origin).resolve().parent.parent != here:
        return "another package named 'jobs' shadows cronwarden's; check PYTHONPATH and the current directory"
    return None


def specs_for(word: str | None) -> tuple[tuple, bool]:
    """The jobs an invocation knows and whether plugins were loaded: a built-in job's line leaves them out.
    ConfigError when a plugin fails to load."""
    from jobs.registry import all_specs, builtin_specs

    plugins = word not in {s.name for s in builtin_specs()}
    return all_specs(with_plugins=plugins), plugins


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
    """The exit code of a line the front runs itself; None to hand over to the full CLI.

    A scheduled tick that does nothing is decided through the database driver alone and printed as the full
    CLI prints it. A job's run, `run-due` and `work` on a plain line with nobody at a terminal run here through
    the same functions the typer commands call (cli/actions.py), without building the typer app.
    """
    line = _parse(args)
    if line is None or sys.stdout.isatty():
        return None
    for env, key in _OBSERVER_ENV.items():
        if line[key] is None and os.environ.get(env) is not None:
            if not os.environ[env]:
                return None  # an empty variable: left to the option parser's reading of it
            line[key] = os.environ[env]
    if shadowing_problem() is not None:
        return None
    if _decidable(line):
        try:
            reports = _decide(line)
        except Exception:  # noqa: BLE001 - jobs.tick's HandOver (a doubt) or any error: the run below decides and explains
            reports = None
        if reports is not None:
            return _show(line, reports)
    if sys.stderr.isatty() or "_CRONWARDEN_COMPLETE" in os.environ:  # a progress bar to draw, a shell to complete
        return None
    return _direct(line)


def _parse(args: list[str]) -> dict | None:
    """`[global options] JOB|run-due|work [options]`, global options on either side; None for any other line."""
    line: dict = {"config": None, "database_url": None, "log_format": "text", "quiet": False, "verbose": False,
                  "metrics_file": None, "pushgateway": None, "json": False, "force": False, "dry_run": False,
                  "max_jobs": None, "max_seconds": 50.0, "batch_size": 200, "job": None}
    command_options: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _VALUED or name in _WORK_VALUED:
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            if name in _VALUED:
                line[_VALUED[name]] = value
            else:
                command_options[name] = value
        elif arg in _FLAGS:
            line[_FLAGS[arg]] = True
        elif arg in _JOB_FLAGS:
            command_options[arg] = True
        elif arg.startswith("-") or line["job"] is not None:
            return None
        else:
            line["job"] = arg
        i += 1
    if line["job"] is None or line["log_format"] not in ("text", "json"):
        return None
    for option, value in command_options.items():
        if option in _JOB_FLAGS and line["job"] not in ("run-due", "work"):
            line[_JOB_FLAGS[option]] = True
        elif option in _WORK_VALUED and line["job"] == "work":
            key, kind, lowest, highest = _WORK_VALUED[option]
            number = _number(value, kind)
            if number is None or number < lowest or (highest is not None and number > highest):
                return None
            line[key] = number
        else:
            return None
    return line


def _number(text: str, kind: type) -> float | None:
    """A plain decimal number (digits without a leading zero, and one point between digits for a float); None
    for anything the option parser might read otherwise (signs, exponents, underscores, spaces, inf, nan)."""
    parts = text.split(".")
    if len(parts) > (2 if kind is float else 1) or not all(part.isdigit() and part.isascii() for part in parts) \
            or (len(parts[0]) > 1 and parts[0].startswith("0")):
        return None
    return kind(text)


def _decidable(line: dict) -> bool:
    """A scheduled tick that only the driver's read may find doing nothing (nothing to publish, no debug lines)."""
    return (line["job"] != "work" and not (line["force"] or line["dry_run"] or line["verbose"])
            and line["metrics_file"] is None and line["pushgateway"] is None)


def _direct(line: dict) -> int | None:
    """Run a built-in job, `run-due` or `work` as the typer command would, through cli/actions.py."""
    from jobs.registry import builtin_specs

    if line["job"] not in {spec.name for spec in builtin_specs()} | {"run-due", "work"}:
        return None
    from jobs.errors import ConfigError

    from . import actions, exit_codes, logs, render
    from .errors import guarded
    from .state import start

    logs.use_format(line["log_format"])
    try:
        specs, plugins = specs_for(line["job"])
    except ConfigError as exc:
        render.error(f"configuration: {exc}")
        return exit_codes.EX_CONFIG
    try:
        _preload("jobs.queue.worker" if line["job"] == "work" else "jobs.runner")
        state = start(specs, plugins, config_path=line["config"], database_url=line["database_url"],
                      log_format=line["log_format"], quiet=line["quiet"], verbose=line["verbose"],
                      metrics_file=line["metrics_file"], pushgateway=line["pushgateway"])
        if line["job"] == "work":
            return guarded(state, lambda: actions.work(state, max_jobs=line["max_jobs"],
                                                       max_seconds=line["max_seconds"],
                                                       batch_size=line["batch_size"], as_json=line["json"]))
        if line["job"] == "run-due":
            return guarded(state, lambda: actions.run_due(state, as_json=line["json"]))
        return guarded(state, lambda: actions.run_job(state, line["job"], force=line["force"],
                                                      dry_run=line["dry_run"], as_json=line["json"]))
    except KeyboardInterrupt:
        return exit_codes.EX_SIGINT


def _preload(module: str) -> None:
    """Import the module the command is about to run (and SQLAlchemy with it) with the cyclic garbage collector off,
    then move everything imported so far into its permanent generation.

    The modules' objects live as long as the process: collecting them is pure cost, about 100 passes over a
    growing heap while importing, and the traversal of the whole heap at exit. Freezing them spares a run
    both (tens of milliseconds each on a busy machine) and changes nothing a run does or prints. An import
    that fails is left to fail again where the command imports it, which reports it as it always has.
    """
    import gc
    from importlib import import_module

    gc.disable()
    try:
        import_module(module)
    except Exception:  # noqa: BLE001, S110 - reported by the command's own import
        pass
    finally:
        gc.freeze()
        gc.enable()


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
    JSON is imported only when there is JSON to write (a not-due tick writes nothing)."""
    from jobs.outcome import RunStatus

    from . import exit_codes

    locked = [report for report in reports if report.status is RunStatus.LOCKED]
    if locked and not line["quiet"]:  # logged at INFO, which --quiet leaves out (a terminal never comes here)
        for report in locked:
            _log_locked(report, line["log_format"])
    codes = [exit_codes.for_report(report) for report in reports]
    code = exit_codes.worst(codes)
    if line["json"]:
        from . import render

        if line["job"] != "run-due":
            render.run_report(reports[0], as_json=True, quiet=line["quiet"], exit_code=code)
        else:
            render.json_out(render.run_due_json(reports, codes, code))
    return code


def _log_locked(report: RunReport, log_format: str) -> None:
    """The line the runner logs through job_logger for a locked tick, in either format, written as
    logging's handler (cli/logs.py) writes it, without importing logging for one line."""
    import time

    from jobs.due import locked_line
    from jobs.secrets import redact

    from . import log_lines

    created, message = time.time(), locked_line(report)
    if log_format == "json":
        text = log_lines.as_json(log_lines.json_entry(created, "INFO", "cronwarden.job", report.job, None, message))
    else:
        text = log_lines.text(created, "INFO", report.job, None, message)
    sys.stderr.write(redact(text) + "\n")
    sys.stderr.flush()


def run() -> None:
    raise SystemExit(main())
