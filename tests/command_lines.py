"""Reading cronwarden invocations out of shell text and checking them against the real CLI
(shared by the crontab and Kubernetes manifest tests)."""

from __future__ import annotations

import functools
import re
import shlex
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CRONTAB = REPO / "crontab.example"
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SHELL_SEPARATORS = {";", "&", "&&", "|", "||", "(", ")", "((", "))", "do", "done", "then", "else", "fi"}


@functools.cache
def cli_command():
    """The real command tree, built the way `cronwarden` builds it (built-in jobs and plugins)."""
    import typer

    from cli.app import build
    from jobs.registry import all_specs

    return typer.main.get_command(build(all_specs(), True))


def real_commands() -> set[str]:
    """Every command path the CLI accepts: 'list', 'refresh-token-cleanup', 'db upgrade'..."""
    found = set()
    for name, command in cli_command().commands.items():
        found.add(name)
        found.update(f"{name} {sub}" for sub in getattr(command, "commands", {}))
    return found


def recurring_jobs() -> dict[str, timedelta]:
    """Built-in jobs with a repeating schedule, and their default period (admin-seed runs once)."""
    from jobs.config import load
    from jobs.registry import builtin_specs

    config = load({}, builtin_specs(), environ={})
    return {name: job.schedule.period() for name, job in config.jobs.items() if job.schedule.period()}


def simple_commands(text: str) -> list[list[str]]:
    """The words of each simple command in a shell command line or script (split at ; & | do ...)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in SHELL_SEPARATORS or token.startswith(("<", ">")):
            commands.append([])
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


def shell_invocations(text: str) -> list[list[str]]:
    """The arguments of each `cronwarden ...` in a shell command line or script."""
    found = []
    for words in simple_commands(text):
        at = [i for i, word in enumerate(words) if word == "cronwarden" or word.endswith("/cronwarden")]
        if at:
            found.append(words[at[0] + 1:])
    return found


def global_options_and_command(args: list[str]) -> tuple[list[str], list[str]]:
    """Split `--quiet --config X db upgrade --json` into the global options and the command path."""
    takes_value = {opt for p in cli_command().params if not getattr(p, "is_flag", False) for opt in p.opts}
    options: list[str] = []
    rest = list(args)
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        options.append(option)
        if option in takes_value and rest:
            options.append(rest.pop(0))
    path: list[str] = []
    while rest and not rest[0].startswith("-") and " ".join(path + rest[:1]) in real_commands():
        path.append(rest.pop(0))
    return options, path


def help_exit_code(args: list[str]) -> int:
    """Parse the invocation with the real CLI (`--help` appended: nothing runs); 0 when valid."""
    from cli.app import main

    return main([*args, "--help"])


def for_window(args: list[str]) -> timedelta | None:
    """The `--for` window of a cronwarden invocation's arguments, if it has one."""
    from jobs.schedule import parse_duration

    for i, arg in enumerate(args):
        if arg == "--for" and i + 1 < len(args):
            return parse_duration(args[i + 1])
        if arg.startswith("--for="):
            return parse_duration(arg.partition("=")[2])
    return None
