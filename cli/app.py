"""The root command: global options, the shadowing guard, and main()."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated, Any

import typer

from .front import shadowing_problem, specs_for
from .state import start

HELP = """Run an application's recurring maintenance jobs safely from cron or Kubernetes.

Each job checks the tracking table, takes a lock, works in bounded transactions,
records its outcome and exits: 0 ran or skipped, 1 failed, 2 usage, 75 temporary failure
(database or mail server unreachable), 78 bad configuration, 130/143 interrupted.
"""


class LogFormat(str, Enum):
    text = "text"
    json = "json"


def _print_version(value: bool) -> None:
    """`--version`: the installed package's version, read from its metadata (one source: pyproject.toml)."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    from . import render

    try:
        found = version("cronwarden")
    except PackageNotFoundError:
        found = "unknown (not installed as a package)"
    render.line(f"cronwarden {found}")
    raise typer.Exit(0)


def build(specs: tuple, plugins_loaded: bool) -> typer.Typer:
    from . import db_commands, email_commands, job_commands, metrics_commands, ops_commands, queue_commands

    app = typer.Typer(
        name="cronwarden",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )

    @app.callback()
    def root(
        ctx: typer.Context,
        config: Annotated[str | None, typer.Option(
            "--config", metavar="PATH", help="TOML config (else $CRONWARDEN_CONFIG, ./cronwarden.toml).")] = None,
        database_url: Annotated[str | None, typer.Option(
            "--database-url", metavar="URL", help="Overrides the config and $CRONWARDEN_DATABASE_URL.")] = None,
        log_format: Annotated[LogFormat, typer.Option("--log-format", help="Log lines on stderr.")] = LogFormat.text,
        quiet: Annotated[bool, typer.Option(
            "--quiet", "-q", help="Print nothing on success (cron mails only failures).")] = False,
        verbose: Annotated[bool, typer.Option(
            "--verbose", "-v", help="Debug logging, tracebacks of failures.")] = False,
        metrics_file: Annotated[str | None, typer.Option(
            "--metrics-file", metavar="PATH", envvar="CRONWARDEN_METRICS_FILE",
            help="After each run, replace this file atomically with every job's Prometheus metrics "
                 "(node_exporter textfile collector).")] = None,
        pushgateway: Annotated[str | None, typer.Option(
            "--pushgateway", metavar="URL", envvar="CRONWARDEN_PUSHGATEWAY",
            help="After each run, PUT every job's metrics to this Prometheus Pushgateway "
                 "(grouping key /metrics/job/cronwarden unless the URL names one).")] = None,
        version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                              help="Print the version and exit.")] = False,
    ) -> None:
        ctx.obj = start(specs, plugins_loaded, config_path=config, database_url=database_url,
                        log_format=log_format.value, quiet=quiet, verbose=verbose, metrics_file=metrics_file,
                        pushgateway=pushgateway)

    job_commands.register(app, specs)
    ops_commands.register(app)
    db_commands.register(app)
    metrics_commands.register(app)
    queue_commands.register(app)
    email_commands.register(app)
    return app


def main(argv: list[str] | None = None, prog_name: str = "cronwarden") -> int:
    """Entry point of the console script; returns the exit code."""
    from . import argv as argv_mod
    from . import exit_codes, logs, render

    args = list(sys.argv[1:] if argv is None else argv)
    logs.use_format(argv_mod.log_format(args))
    problem = shadowing_problem()
    if problem:
        render.error(problem, masked=False)
        return exit_codes.EX_CONFIG
    from jobs.errors import ConfigError

    try:
        specs, plugins = specs_for(argv_mod.command_word(args))
    except ConfigError as exc:
        render.error(f"configuration: {exc}")
        return exit_codes.EX_CONFIG
    command = _command(specs, plugins)
    args = argv_mod.hoist(args, command)
    click = _click_exceptions()
    try:
        rv = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a command group alone: its help, as click shows it
            exc.show()
            return exc.exit_code
        return _usage_error(exc, prog_name)
    except click.ClickException as exc:
        render.error(exc.format_message())
        return exc.exit_code
    except (KeyboardInterrupt, getattr(click, "Abort", ())):  # typer's own click has no Abort: Ctrl-C comes as is
        return exit_codes.EX_SIGINT
    return rv if isinstance(rv, int) else 0


_COMMANDS: dict[tuple[tuple, bool], Any] = {}


def _command(specs: tuple, plugins: bool) -> Any:
    """The click command typer makes of the app, once per process and set of jobs: building it reads every
    command's signature (~15 ms), which a process calling main() more than once (an application embedding
    the CLI, the test suite) would pay per call. A click command keeps no state of a call."""
    key = (specs, plugins)
    if key not in _COMMANDS:
        _COMMANDS[key] = typer.main.get_command(build(specs, plugins))
    return _COMMANDS[key]


def _click_exceptions():
    """The exceptions of the click that typer runs on (recent typers carry their own copy)."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _usage_error(exc: Any, prog_name: str) -> int:  # click's UsageError, from whichever click typer runs on
    """One line, like every other error: what is wrong, and where the help is."""
    from . import render

    where = exc.ctx.command_path if exc.ctx is not None else prog_name
    render.error(f"{exc.format_message()} (see '{where} --help')")
    return exc.exit_code


def run() -> None:
    """The console script of installs made before cli.front:run: the front decides first there too."""
    from .front import main as front

    raise SystemExit(front())
