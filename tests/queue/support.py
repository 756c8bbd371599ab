"""Runs the CLI with the queue's commands registered (until cli/app.py registers them itself)."""

from __future__ import annotations

import sys

import typer

from cli import app as app_module
from cli import queue_commands

TASK_MODULES = "tests.queue.tasks"
_original_build = app_module.build


def build(specs: tuple, plugins_loaded: bool) -> typer.Typer:
    app = _original_build(specs, plugins_loaded)
    if not any(c.name == "work" for c in app.registered_commands):
        queue_commands.register(app)
    return app


def install() -> None:
    app_module.build = build


if __name__ == "__main__":
    install()
    raise SystemExit(app_module.main(sys.argv[1:]))
