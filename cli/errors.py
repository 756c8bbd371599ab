"""One place that turns any failure of a command into one clear line and the contract's exit code."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from jobs.errors import ConfigError, CronwardenError, DatabaseUnavailable, Interrupted, UsageError, one_line

from . import exit_codes, render

F = TypeVar("F", bound=Callable)
log = logging.getLogger("cronwarden.cli")


def handled(fn: F) -> F:
    """Wrap a command (whose first parameter is ctx): map errors to exit codes, close the engine, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        ctx = kwargs.get("ctx") or args[0]
        try:
            code = fn(*args, **kwargs)
        except typer.Exit:
            raise
        except ConfigError as exc:
            render.error(f"configuration: {exc}")
            code = exit_codes.EX_CONFIG
        except UsageError as exc:
            render.error(str(exc))
            code = exit_codes.EX_USAGE
        except DatabaseUnavailable as exc:
            render.error(str(exc))
            code = exit_codes.EX_TEMPFAIL
        except Interrupted as exc:
            render.error(str(exc))
            code = exit_codes.for_signal(exc.signum)
        except CronwardenError as exc:
            render.error(str(exc))
            code = exit_codes.EX_FAILED
        except Exception as exc:
            from jobs.errors import is_transient

            problem = _setup_problem(ctx, exc)
            if is_transient(exc):
                render.error(f"database unreachable: {one_line(exc)}")
                code = exit_codes.EX_TEMPFAIL
            elif problem is not None:
                render.error(f"configuration: {problem}")
                code = exit_codes.EX_CONFIG
            else:
                log.debug("unexpected error", exc_info=True)
                render.error(f"unexpected {one_line(exc)} (run with --verbose for details)")
                code = exit_codes.EX_FAILED
        finally:
            state = ctx.find_root().obj
            if state is not None:
                state.close()
        raise typer.Exit(code or 0)

    return wrapper  # type: ignore[return-value]


def _setup_problem(ctx: Any, exc: Exception):
    """A setup mistake (missing database, unusable SQLite file) that reached us outside jobs.execution.db_call."""
    from jobs.preflight import explain

    app = getattr(ctx.find_root().obj, "_app", None)
    return explain(exc, app.config.database_url) if app is not None else None
