"""A durable queue of one-off jobs: immediate, delayed and continuation jobs with persistent retries.

The application enqueues inside its own transaction (so the job exists exactly
when its change commits); cron runs `cronwarden work` every minute, which
claims the due rows and runs each through the same JobContext as a recurring
job. Tasks are declared as TaskSpec values and found in, in order: the
built-ins (jobs.queue.builtin), the `cronwarden.tasks` entry point group and
the modules named in $CRONWARDEN_TASK_MODULES (comma-separated; each module
exposes `TASKS`, a tuple of TaskSpec).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from ..errors import ConfigError, UsageError
from ..settings import NoSettings, coerce, fields_of, type_of
from ..spec import check_name

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from ..context import JobContext
    from .store import Enqueued

__all__ = ["TaskSpec", "enqueue", "queue_depth", "task_specs", "find_task", "InvalidArguments",
           "DEFAULT_RETRY_DELAYS"]

DEFAULT_RETRY_DELAYS = (timedelta(seconds=60), timedelta(seconds=300), timedelta(seconds=900))
ENTRY_POINT_GROUP = "cronwarden.tasks"
MODULES_ENV = "CRONWARDEN_TASK_MODULES"


class InvalidArguments(UsageError):
    """Arguments that do not fit the task's declaration: refused at enqueue (exit 2 on the CLI)."""


@dataclass(frozen=True)
class TaskSpec:
    """A one-off job the queue can run.

    run: `run(ctx, args)`, with the same JobContext as a recurring job; it must
      be idempotent, since a worker that dies mid-task means it runs again.
    args: a frozen dataclass declared with `jobs.settings.setting`; enqueue
      validates against it (types, ranges, required fields). Secrets cannot be
      arguments: they would be stored in the queue table.
    retry_delays: the waits before attempts 2, 3, ...; attempts in all = len + 1.
    timeout: checked at batch boundaries (ctx.checkpoint, ctx.in_transaction).
    claim_margin: a claim lasts timeout + claim_margin; past it, another worker
      takes the task over and the first one's next commit is refused.
    """

    name: str
    run: Callable[[JobContext, Any], None]
    args: type = NoSettings
    description: str = ""
    retry_delays: tuple[timedelta, ...] = DEFAULT_RETRY_DELAYS
    timeout: timedelta = timedelta(minutes=5)
    claim_margin: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        check_name(self.name, "task")
        if not callable(self.run):
            raise ValueError(f"task {self.name!r}: run must be callable")

    @property
    def claim_ttl(self) -> timedelta:
        return self.timeout + self.claim_margin

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays) + 1


_found: dict[str, dict[str, TaskSpec]] = {}


def task_specs(environ: Mapping[str, str] | None = None) -> dict[str, TaskSpec]:
    """Every task this process can run, by name (looked up once per value of $CRONWARDEN_TASK_MODULES)."""
    env = os.environ if environ is None else environ
    modules = env.get(MODULES_ENV, "")
    if modules not in _found:
        _found[modules] = _discover(modules)
    return dict(_found[modules])


def _discover(modules: str) -> dict[str, TaskSpec]:
    from .builtin import BUILTIN_TASKS

    found: list[TaskSpec] = list(BUILTIN_TASKS)
    found += _entry_point_tasks()
    for module in filter(None, (m.strip() for m in modules.split(","))):
        found += _module_tasks(module)
    by_name: dict[str, TaskSpec] = {}
    for spec in found:
        if spec.name in by_name and by_name[spec.name] is not spec:
            raise ConfigError(f"two queue tasks are named {spec.name!r}")
        by_name[spec.name] = spec
    return by_name


def _entry_point_tasks() -> list[TaskSpec]:
    from ..registry import load_entry_points

    found: list[TaskSpec] = []
    for where, obj in load_entry_points(ENTRY_POINT_GROUP, "task"):
        found += _checked(obj, where)
    return found


def _module_tasks(module: str) -> list[TaskSpec]:
    from importlib import import_module

    try:
        obj = import_module(module).TASKS
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{MODULES_ENV}: module {module!r} has no TASKS: {type(exc).__name__}: {exc}") from None
    return _checked(obj, f"{MODULES_ENV} module {module!r}")


def _checked(obj: Any, where: str) -> list[TaskSpec]:
    items = list(obj) if isinstance(obj, (list, tuple)) else [obj]
    if not all(isinstance(item, TaskSpec) for item in items):
        raise ConfigError(f"{where} is not a TaskSpec or a tuple of them")
    return items


def find_task(name: str, tasks: Mapping[str, TaskSpec] | None = None) -> TaskSpec:
    tasks = task_specs() if tasks is None else tasks
    if name not in tasks:
        raise InvalidArguments(f"unknown queue task {name!r} (known: {', '.join(sorted(tasks))})")
    return tasks[name]


def validate_args(task: TaskSpec, raw: Mapping[str, Any], *, from_text: bool = False) -> Any:
    """The args dataclass from raw values; from_text (the CLI's k=v) reads "7" as a number."""
    known = {f.name: f for f in fields_of(task.args)}
    values: dict[str, Any] = {}
    try:
        for key, value in raw.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"unknown argument {key!r} (known: {', '.join(known) or 'none'})")
            f = known[name]
            if type_of(task.args, f).__name__ == "Secret":
                raise ConfigError(f"argument {key!r} is a secret: secrets cannot be stored in the queue")
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, timedelta):
                value = value.total_seconds()
            values[name] = coerce(task.args, f, value, f"argument {key}", strict=not from_text)
        missing = [f.name for f in known.values() if f.name not in values
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"missing required argument {missing[0]!r}")
        return task.args(**values)
    except ConfigError as exc:
        raise InvalidArguments(f"{task.name}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise InvalidArguments(f"{task.name}: {exc}") from None


def args_to_json(args: Any) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, timedelta):
            return value.total_seconds()
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return json.dumps({f.name: plain(getattr(args, f.name)) for f in fields_of(type(args))}, sort_keys=True)


def args_from_json(task: TaskSpec, text: str) -> Any:
    """Read stored arguments back (validated again: the declaration may have changed since)."""
    return validate_args(task, json.loads(text), from_text=True)


class EnqueueOptions(TypedDict, total=False):
    """enqueue's and submit's keywords: the arguments, when it may run, its parent, its idempotency key."""

    args: Mapping[str, Any] | None
    delay: timedelta | None
    at: datetime | None
    after: int | None
    key: str | None


def enqueue(connection_or_session: Any, job: str | TaskSpec, **options: Unpack[EnqueueOptions]) -> int:
    """Add a job in the caller's transaction (never committed here); returns its id.

    The job exists exactly when the caller's transaction commits. The same key
    twice gives the existing job's id (`submit` also says whether it existed).
    `after` makes a continuation: it runs once that job succeeds and is
    cancelled if it fails for good or is cancelled.
    """
    return submit(connection_or_session, job, **options).id


def submit(
    connection_or_session: Any,
    job: str | TaskSpec,
    *,
    args: Mapping[str, Any] | None = None,
    delay: timedelta | None = None,
    at: datetime | None = None,
    after: int | None = None,
    key: str | None = None,
) -> Enqueued:
    """`enqueue`, telling whether the key was already taken and whether that job has the same task and arguments.

    A taken key never changes the existing job: its own arguments, schedule and parent stay as they are.
    """
    from . import store

    task = job if isinstance(job, TaskSpec) else find_task(job)
    validated = validate_args(task, args or {})
    if delay is not None and at is not None:
        raise InvalidArguments("give either delay or at, not both")
    if delay is not None and delay < timedelta(0):
        raise InvalidArguments("delay must not be negative")
    if at is not None and at.tzinfo is None:
        raise InvalidArguments("at must be an aware datetime (UTC or with an offset)")
    if key is not None and not 0 < len(key) <= 255:
        raise InvalidArguments("key must have 1 to 255 characters")
    conn = _connection(connection_or_session)
    return store.add(conn, task, args_to_json(validated), delay=delay, at=at, after=after, key=key)


def _connection(obj: Any) -> Connection:
    """A Connection as is; a Session's connection (joining the session's transaction)."""
    from sqlalchemy.engine import Connection

    if isinstance(obj, Connection):
        return obj
    connection = getattr(obj, "connection", None)
    if callable(connection):
        return connection()
    raise TypeError("enqueue needs a SQLAlchemy Connection or Session (the caller's transaction)")


def queue_depth(engine: Engine) -> dict[str, Any]:
    """Jobs per status and the age in seconds of the oldest due waiting job (None when none is due)."""
    from . import store

    return store.depth(engine)
