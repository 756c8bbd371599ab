"""Configuration: TOML file + environment → one frozen, validated Config.

Everything is checked here, before the database is touched: an invalid
value raises ConfigError with one line naming the key and the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from . import retention
from . import settings as settings_mod
from .errors import ConfigError
from .records import FrozenRecord
from .schedule import Schedule, parse_duration, parse_schedule
from .secrets import redact
from .spec import JobSpec

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any

    from .host_loss import HostLossBounds

DEFAULT_DATABASE_URL = "sqlite:///cronwarden.db"  # the embedded default: the only database created on first use
DEFAULT_RETRY_DELAYS = (timedelta(seconds=60), timedelta(seconds=300), timedelta(seconds=900))
LOCK_BACKENDS = ("auto", "file", "postgres", "mysql", "lease")
COMMON_JOB_KEYS = ("enabled", "interval", "cron", "timezone", "retry_delays", "timeout", "grace", "ping_url",
                   "history", "jitter", "catch_up", "catch_up_window", "overlap")
CATCH_UP_CHOICES = ("one", "none")
OVERLAP_CHOICES = ("skip", "buffer_one")  # Temporal's overlap policy names
HOST_LOSS_MIN, HOST_LOSS_MAX = timedelta(seconds=8), timedelta(hours=1)  # 8 s: 1 s idle + 3 probes 1 s apart
_TOP_KEYS = ("database_url", "locks", "retry", "history", "jobs")
_HISTORY = retention.HistoryPolicy()


@dataclass(init=False, repr=False, eq=False)
class RetryPolicy(FrozenRecord):
    """In-process retries of transient errors: bounded by attempts and by total time."""

    attempts: int = 5
    initial_wait: timedelta = timedelta(seconds=0.5)
    max_wait: timedelta = timedelta(seconds=8)
    max_time: timedelta = timedelta(seconds=30)

    def __init__(self, attempts: int = 5, initial_wait: timedelta = timedelta(seconds=0.5),
                 max_wait: timedelta = timedelta(seconds=8), max_time: timedelta = timedelta(seconds=30)) -> None:
        object.__setattr__(self, "attempts", attempts)
        object.__setattr__(self, "initial_wait", initial_wait)
        object.__setattr__(self, "max_wait", max_wait)
        object.__setattr__(self, "max_time", max_time)


@dataclass(init=False, repr=False, eq=False)
class LockConfig(FrozenRecord):
    """[locks]: which backend holds a job's lock, and how long a vanished holder keeps it."""

    backend: str = "auto"
    directory: Path | None = None
    lease_ttl: timedelta = timedelta(seconds=30)  # host_loss_bound / 2 unless set
    host_loss_bound: timedelta = timedelta(seconds=60)

    def __init__(self, backend: str = "auto", directory: Path | None = None,
                 lease_ttl: timedelta = timedelta(seconds=30), host_loss_bound: timedelta = timedelta(seconds=60)
                 ) -> None:
        object.__setattr__(self, "backend", backend)
        object.__setattr__(self, "directory", directory)
        object.__setattr__(self, "lease_ttl", lease_ttl)
        object.__setattr__(self, "host_loss_bound", host_loss_bound)

    def host_loss(self) -> HostLossBounds:
        """The connection timeouts and session settings derived from host_loss_bound."""
        from .host_loss import HostLossBounds

        return HostLossBounds(self.host_loss_bound.total_seconds())


@dataclass(init=False, repr=False, eq=False)
class JobConfig(FrozenRecord):
    """One job's validated configuration: the common keys plus its own settings."""

    spec: JobSpec
    enabled: bool
    schedule: Schedule
    retry_delays: tuple[timedelta, ...]
    timeout: timedelta | None
    grace_setting: timedelta | None  # the configured `grace`; None for the default below
    settings: Any
    ping_url: str | None = None
    history: retention.HistoryPolicy = _HISTORY  # which runs keep a row, and how long
    jitter: timedelta = timedelta(0)  # a scheduled run waits up to this long before it starts (jobs.jitter)
    catch_up: str = "one"  # after missed slots: "one" catch-up run, or "none" (skip slots older than the window)
    catch_up_window_setting: timedelta | None = None  # the configured `catch_up_window`; None for the default
    overlap: str = "skip"  # a tick that finds the job running: "skip" it, or "buffer_one" run owed after it

    def __init__(self, spec: JobSpec, enabled: bool, schedule: Schedule, retry_delays: tuple[timedelta, ...],
                 timeout: timedelta | None, grace_setting: timedelta | None, settings: Any,
                 ping_url: str | None = None, history: retention.HistoryPolicy = _HISTORY,
                 jitter: timedelta = timedelta(0), catch_up: str = "one",
                 catch_up_window_setting: timedelta | None = None, overlap: str = "skip") -> None:
        object.__setattr__(self, "spec", spec)
        object.__setattr__(self, "enabled", enabled)
        object.__setattr__(self, "schedule", schedule)
        object.__setattr__(self, "retry_delays", retry_delays)
        object.__setattr__(self, "timeout", timeout)
        object.__setattr__(self, "grace_setting", grace_setting)
        object.__setattr__(self, "settings", settings)
        object.__setattr__(self, "ping_url", ping_url)
        object.__setattr__(self, "history", history)
        object.__setattr__(self, "jitter", jitter)
        object.__setattr__(self, "catch_up", catch_up)
        object.__setattr__(self, "catch_up_window_setting", catch_up_window_setting)
        object.__setattr__(self, "overlap", overlap)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def catch_up_window(self) -> timedelta | None:
        """How late a slot may still start under `catch_up = "none"` (None under "one": any slot catches up).

        By default the job's `grace`: a slot is stale when `check` would already call the job overdue for it.
        Not a minute: ticks arrive minutes after a slot by design (crontab.example ticks every 5 minutes, the
        CronJobs every 15, `run-due` runs its jobs one after another), and a window shorter than the tick
        spacing would skip every slot of a cron schedule. A job ticking every hour or more often has a default
        grace of at least its period, so its latest slot always runs and only older ones are skipped; set a
        shorter window to skip those too."""
        if self.catch_up != "none":
            return None
        return self.catch_up_window_setting if self.catch_up_window_setting is not None else self.grace

    @property
    def grace(self) -> timedelta:
        """`grace`, by default the period clamped to 5 min-1 h. Worked out when asked (status, check,
        metrics), not at load: a cron period samples the schedule, and a tick loads every job."""
        if self.grace_setting is not None:
            return self.grace_setting
        period = self.schedule.period()
        return min(max(timedelta(minutes=5), period), timedelta(hours=1)) if period else timedelta(hours=1)


@dataclass(init=False, repr=False, eq=False)
class Config(FrozenRecord):
    """The whole validated configuration, and the environment it was read with."""

    database_url: str
    locks: LockConfig
    retry: RetryPolicy
    history: retention.HistoryPolicy  # [history]: every job's default
    jobs: dict[str, JobConfig]
    source: Path | None = None
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __init__(self, database_url: str, locks: LockConfig, retry: RetryPolicy, history: retention.HistoryPolicy,
                 jobs: dict[str, JobConfig], source: Path | None = None, environ: Mapping[str, str] | None = None
                 ) -> None:
        object.__setattr__(self, "database_url", database_url)
        object.__setattr__(self, "locks", locks)
        object.__setattr__(self, "retry", retry)
        object.__setattr__(self, "history", history)
        object.__setattr__(self, "jobs", jobs)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "environ", {} if environ is None else environ)

    @property
    def history_retention(self) -> timedelta:
        """The longest a run stays in the history by default (a job's own `history` keys may differ)."""
        return self.history.longest

    @property
    def safe_database_url(self) -> str:
        return redact(self.database_url)

    def job(self, name: str) -> JobConfig:
        return self.jobs[name]


def embedded_default(url: str) -> bool:
    """The embedded default database (a file in the working directory), however it was named: a command that
    writes creates it and its tables on first use; every other database is created by `db upgrade`."""
    return url.strip() == DEFAULT_DATABASE_URL


def find_config_file(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    """--config, then CRONWARDEN_CONFIG, then ./cronwarden.toml if present."""
    named = explicit or environ.get("CRONWARDEN_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"config file not found: {named}")
        return path
    default = Path("cronwarden.toml")
    return default if default.is_file() else None


def read_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import tomllib

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def referenced_jobs(raw: Mapping[str, Any]) -> set[str]:
    """Job names a TOML document configures (to know whether plugins must be loaded)."""
    jobs = raw.get("jobs")
    return set(jobs) if isinstance(jobs, dict) else set()


def load(
    raw: Mapping[str, Any],
    specs: Iterable[JobSpec],
    *,
    environ: Mapping[str, str] | None = None,
    database_url: str | None = None,
    source: Path | None = None,
    check_url: Callable[[str], None] | None = None,
) -> Config:
    """Validate a parsed TOML document and the environment into a Config.

    check_url: how the database URL is checked (default jobs.db.validate_url, which imports SQLAlchemy;
    the quick path passes one that knows the plain URLs and hands over on any other).
    """
    env = dict(os.environ if environ is None else environ)
    unknown = set(raw) - set(_TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown top-level key {sorted(unknown)[0]!r} (known: {', '.join(_TOP_KEYS)})")
    url = _database_url(raw, env, database_url, check_url)
    locks = _locks(_table(raw, "locks"), env)
    retry = _retry(_table(raw, "retry"))
    history = retention.defaults(_table(raw, "history", "[history]"), _duration)
    by_name = {spec.name: spec for spec in specs}
    jobs_raw = _table(raw, "jobs")
    for name in jobs_raw:
        if name not in by_name:
            raise ConfigError(f"[jobs.{name}]: unknown job {name!r} (known: {', '.join(sorted(by_name))})")
    jobs = {name: _job(spec, _table(jobs_raw, name, f"[jobs.{name}]"), env, history)
            for name, spec in by_name.items()}
    return Config(url, locks, retry, history, jobs, source, env)


def _table(raw: Mapping[str, Any], key: str, where: str | None = None) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where or key}: expected a table, got {type(value).__name__}")
    return value


def _only(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}")


def _duration(value: Any, where: str, *, minimum: timedelta | None = None, allow_zero: bool = False) -> timedelta:
    try:
        result = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if result == timedelta(0) and not allow_zero:
        raise ConfigError(f"{where}: must be longer than zero")
    if minimum is not None and result < minimum:
        from .schedule import format_duration

        raise ConfigError(f"{where}: must be at least {format_duration(minimum)}, got {value!r}")
    return result


def _database_url(raw: Mapping[str, Any], env: Mapping[str, str], cli_value: str | None,
                  check_url: Callable[[str], None] | None = None) -> str:
    url = cli_value or settings_mod.read_env("CRONWARDEN_DATABASE_URL", env) or raw.get("database_url")
    if url is None:
        url = DEFAULT_DATABASE_URL
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("database_url: expected a URL such as sqlite:///cronwarden.db")
    url = url.strip()
    if check_url is None:
        from .db import validate_url

        check_url = validate_url
    check_url(url)
    return url


def _locks(table: dict[str, Any], env: Mapping[str, str]) -> LockConfig:
    _only(table, ("backend", "directory", "lease_ttl", "host_loss_bound"), "[locks]")
    backend = table.get("backend", "auto")
    if backend not in LOCK_BACKENDS:
        raise ConfigError(f"[locks] backend: must be one of {', '.join(LOCK_BACKENDS)}, got {backend!r}")
    directory = env.get("CRONWARDEN_LOCK_DIR") or table.get("directory")
    if directory is not None and (not isinstance(directory, str) or not directory or "\x00" in directory):
        raise ConfigError(f"[locks] directory: expected a path, got {directory!r}")
    bound = _duration(table.get("host_loss_bound", "60s"), "[locks] host_loss_bound", minimum=HOST_LOSS_MIN)
    if bound > HOST_LOSS_MAX:
        raise ConfigError(f"[locks] host_loss_bound: must be at most 1h, got {table['host_loss_bound']!r}")
    # By default a vanished lease holder costs what a vanished session lock costs: half the bound.
    ttl = _duration(table["lease_ttl"], "[locks] lease_ttl", minimum=timedelta(seconds=2)) \
        if "lease_ttl" in table else bound / 2
    return LockConfig(backend, Path(directory) if directory else None, ttl, bound)


def _retry(table: dict[str, Any]) -> RetryPolicy:
    _only(table, ("attempts", "initial_wait", "max_wait", "max_time"), "[retry]")
    attempts = table.get("attempts", 5)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 100:
        raise ConfigError(f"[retry] attempts: must be a whole number from 1 to 100, got {attempts!r}")
    return RetryPolicy(
        attempts=attempts,
        initial_wait=_duration(table.get("initial_wait", "0.5s"), "[retry] initial_wait", allow_zero=True),
        max_wait=_duration(table.get("max_wait", "8s"), "[retry] max_wait", allow_zero=True),
        max_time=_duration(table.get("max_time", "30s"), "[retry] max_time", allow_zero=True),
    )


def _job(spec: JobSpec, table: dict[str, Any], env: Mapping[str, str],
         history_default: retention.HistoryPolicy) -> JobConfig:
    where = f"[jobs.{spec.name}]"
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where} enabled: expected true or false, got {enabled!r}")
    interval = table.get("interval")
    cron = table.get("cron")
    tz = table.get("timezone")
    if tz is not None and (cron is None or not isinstance(tz, str)):
        raise ConfigError(f"{where} timezone: only applies to a cron schedule, as an IANA name")
    if interval is None and cron is None:
        default = spec.schedule
        interval, cron = (None, default) if len(default.split()) == 5 else (default, None)
    try:
        schedule = parse_schedule(interval, cron, tz)
    except ValueError as exc:
        key = "interval" if interval is not None else "timezone" if "time zone" in str(exc) else "cron"
        raise ConfigError(f"{where} {key}: {exc}") from None
    delays_raw = table.get("retry_delays", ["60s", "300s", "900s"])
    if not isinstance(delays_raw, list) or len(delays_raw) > 20:
        raise ConfigError(f"{where} retry_delays: expected a list of durations such as [\"60s\", \"300s\"]")
    delays = tuple(_duration(d, f"{where} retry_delays[{i}]") for i, d in enumerate(delays_raw))
    timeout = table.get("timeout")
    timeout_td = _duration(timeout, f"{where} timeout") if timeout is not None else spec.default_timeout
    grace = _duration(table["grace"], f"{where} grace") if "grace" in table else None
    own = {k: v for k, v in table.items() if k not in COMMON_JOB_KEYS}
    job_settings = settings_mod.build(spec.settings, own, where, env)
    catch_up, window = _catch_up(table, where, schedule)
    history = retention.for_job(table.get("history"), where, history_default, _duration)
    overlap = table.get("overlap", "skip")
    if overlap not in OVERLAP_CHOICES:
        raise ConfigError(f"{where} overlap: must be one of {', '.join(OVERLAP_CHOICES)}, got {overlap!r}")
    return JobConfig(spec, enabled, schedule, delays, timeout_td, grace, job_settings, _ping_url(table, where),
                     history, jitter=_jitter(table, schedule, where),
                     catch_up=catch_up, catch_up_window_setting=window, overlap=overlap)


def _jitter(table: Mapping[str, Any], schedule: Schedule, where: str) -> timedelta:
    """`jitter`, shorter than the schedule's period: a delay that could reach the next slot would merge two."""
    if "jitter" not in table:
        return timedelta(0)
    jitter = _duration(table["jitter"], f"{where} jitter", allow_zero=True)
    if not jitter:
        return jitter
    period = schedule.period()  # sampled only for a job that sets jitter
    if period is None:
        raise ConfigError(f"{where} jitter: only applies to a recurring schedule (interval or cron)")
    if jitter >= period:
        from .schedule import format_duration

        raise ConfigError(f"{where} jitter: must be shorter than the schedule's period "
                          f"({format_duration(period)}), got {table['jitter']!r}")
    return jitter


def _catch_up(table: Mapping[str, Any], where: str, schedule: Schedule) -> tuple[str, timedelta | None]:
    """`catch_up` and `catch_up_window`: the window means something only when slots are skipped."""
    from .schedule import Once

    catch_up = table.get("catch_up", "one")
    if catch_up not in CATCH_UP_CHOICES:
        raise ConfigError(f"{where} catch_up: must be one of {', '.join(CATCH_UP_CHOICES)}, got {catch_up!r}")
    if catch_up == "none" and isinstance(schedule, Once):
        raise ConfigError(f"{where} catch_up: a one-shot job (interval = \"once\") has no slots to skip")
    if "catch_up_window" not in table:
        return catch_up, None
    if catch_up != "none":
        raise ConfigError(f"{where} catch_up_window: only applies with catch_up = \"none\"")
    return catch_up, _duration(table["catch_up_window"], f"{where} catch_up_window", minimum=timedelta(seconds=1))


def _ping_url(table: Mapping[str, Any], where: str) -> str | None:
    """A healthchecks.io-style dead-man URL (http or https); it may embed a key, so it is treated as a secret."""
    url = table.get("ping_url")
    if url is None or url == "":
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
        raise ConfigError(f"{where} ping_url: expected an http:// or https:// URL")
    from .secrets import remember

    remember(url)
    return url.rstrip("/")
