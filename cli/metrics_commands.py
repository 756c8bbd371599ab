"""`metrics`: every job's Prometheus metrics from the tracking tables, on stdout or into a textfile."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import exit_codes, render
from .errors import handled


def register(app: typer.Typer) -> None:
    app.command(name="metrics")(metrics)


@handled
def metrics(
    ctx: typer.Context,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="PATH", dir_okay=False,
        help="Replace this file atomically instead of printing (node_exporter's textfile collector).")] = None,
) -> int:
    """Prometheus text format: last success, duration, failures, overdue, next due and history of every job."""
    from jobs.observe.metrics import exposition, write_file

    app = ctx.find_root().obj.app(read_only=True)
    text = exposition(app)
    if output is None:
        render.line(text.rstrip("\n"))
        return exit_codes.EX_OK
    try:
        write_file(output, text)
    except OSError as exc:
        render.error(f"cannot write {output}: {exc.strerror or exc}")
        return exit_codes.EX_FAILED
    return exit_codes.EX_OK
