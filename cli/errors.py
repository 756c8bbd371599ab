"""One place that turns any failure of a command into one clear line and the contract's exit code.

Free of the CLI framework: the front's direct lines (cli/front.py) run a command through guarded() as the
typer commands do through handled().
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from jobs.errors import ConfigError, CronwardenError, DatabaseUnavailable, Interrupted, UsageError, one_line

from . import exit_codes, render

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any, TypeVar

    from .state import State

    F = TypeVar("F", bound=Callable)

log = logging.getLogger("cronwarden.cli")


def guarded(state: State | None, fn: Callable[[], int | None],
            passthrough: tuple[type[BaseException], ...] = ()) -> int:
    """fn()'s exit code, or the code of the error it raised (one line on stderr, no traceback); the engine is
    closed either way. Exceptions in `passthrough` (the CLI framework's own exit) propagate."""
    try:
        code = fn()
    except passthrough:
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

        problem = _setup_problem(state, exc)
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
        if state is not None:
            state.close()
    return code or 0


def handled(fn: F) -> F:
    """Wrap a typer command (whose first parameter is ctx): guarded(), its code raised as typer.Exit."""
    import typer

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        ctx = kwargs.get("ctx") or args[0]
        code = guarded(ctx.find_root().obj, lambda: fn(*args, **kwargs), (typer.Exit,))
        raise typer.Exit(code)

    return wrapper  # type: ignore[return-value]


def _setup_problem(state: Any, exc: Exception):
    """A setup mistake (missing database, unusable SQLite file) that reached us outside jobs.execution.db_call."""
    from jobs.preflight import explain

    app = getattr(state, "_app", None) if state is not None else None
    return explain(exc, app.config.database_url) if app is not None else None
