"""Typed job settings: declared once as a dataclass, validated from TOML, env and CLI.

A job declares its own settings as a frozen dataclass whose fields use
`setting(...)`. The same declaration drives config validation (unknown key,
wrong type, out of range → ConfigError naming the key) and the job's
command-line options (`--retention-days`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from datetime import timedelta
from pathlib import Path

from .errors import ConfigError
from .records import FrozenRecord
from .secrets import Secret

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any

_NUMBER_LIMIT = 10**9


def setting(
    default: Any = MISSING,
    *,
    help: str = "",
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
    cli: bool = False,
    env: str | None = None,
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """Declare one job setting.

    min/max bound numbers (and durations, in seconds); choices bounds strings;
    cli exposes it as a --option of the job's subcommand; env names an
    environment variable (and its `_FILE` twin) that supplies the value, the
    only way a Secret may be set; check returns an error text or None.
    """
    meta = {"help": help, "min": min, "max": max, "choices": choices, "cli": cli, "env": env, "check": check}
    if isinstance(default, (list, dict, set)):
        frozen = tuple(default) if not isinstance(default, dict) else dict(default)
        return field(default_factory=lambda: frozen, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(init=False, repr=False, eq=False)
class NoSettings(FrozenRecord):
    """For jobs with nothing to configure beyond the common keys."""


def fields_of(settings_type: type) -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(settings_type)


def type_of(settings_type: type, f: dataclasses.Field) -> Any:
    import typing  # only when a value is given: a tick with the defaults never needs the hints

    hints = typing.get_type_hints(settings_type)
    return hints[f.name]


def option_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def build(settings_type: type, raw: dict[str, Any], where: str, environ: Mapping[str, str]) -> Any:
    """Validate raw values (TOML keys in snake_case) into the settings dataclass."""
    known = {f.name: f for f in fields_of(settings_type)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        f = known.get(name)
        if f is None or f.metadata.get("env") and type_of(settings_type, f) is Secret:
            hint = "" if f is None else f" (set it through {f.metadata['env']} or {f.metadata['env']}_FILE)"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
        values[name] = coerce(settings_type, f, value, f"{where} {key}", strict=True)
    for f in known.values():
        env = f.metadata.get("env")
        if env and f.name not in values:
            text = read_env(env, environ)
            if text is not None:
                values[f.name] = coerce(settings_type, f, text, env)
    missing = [f.name for f in known.values() if f.name not in values and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key {missing[0]!r}")
    try:
        return settings_type(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def override(settings: Any, overrides: dict[str, Any], where_for: Callable[[str], str]) -> Any:
    """Apply command-line values on top of validated settings, validating them alike."""
    settings_type = type(settings)
    known = {f.name: f for f in fields_of(settings_type)}
    changes = {
        name: coerce(settings_type, known[name], value, where_for(name), strict=True)
        for name, value in overrides.items()
        if value is not None
    }
    if not changes:
        return settings
    try:
        return dataclasses.replace(settings, **changes)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{exc}") from None


def read_env(name: str, environ: Mapping[str, str]) -> str | None:
    """NAME or NAME_FILE (a mounted Kubernetes Secret); NAME wins."""
    if environ.get(name):
        if any("\udc80" <= ch <= "\udcff" for ch in environ[name]):  # bytes that were not UTF-8
            raise ConfigError(f"{name}: not valid UTF-8")
        return environ[name]
    path = environ.get(name + "_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}_FILE: cannot read {path!r}: {exc.__class__.__name__}") from None


def coerce(settings_type: type, f: dataclasses.Field, value: Any, where: str, *, strict: bool = False) -> Any:
    """Validate one value; strict (TOML) refuses "7" for a number, lenient (environment) reads it."""
    kind = type_of(settings_type, f)
    meta = f.metadata
    if strict and isinstance(value, str) and kind in (int, float, bool):
        raise ConfigError(f"{where}: expected {'true or false' if kind is bool else 'a number'}, "
                          f"got the string {value!r}")
    result = _coerce_type(kind, value, where)
    number = result.total_seconds() if isinstance(result, timedelta) else result
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        if meta.get("min") is not None and number < meta["min"]:
            raise ConfigError(f"{where}: must be at least {_fmt(meta['min'], result)}, got {value!r}")
        if meta.get("max") is not None and number > meta["max"]:
            raise ConfigError(f"{where}: must be at most {_fmt(meta['max'], result)}, got {value!r}")
    if meta.get("choices") and result not in meta["choices"]:
        raise ConfigError(f"{where}: must be one of {', '.join(meta['choices'])}, got {value!r}")
    if meta.get("check"):
        problem = meta["check"](result)
        if problem:
            raise ConfigError(f"{where}: {problem}")
    return result


def _fmt(limit: float, sample: Any) -> str:
    if isinstance(sample, timedelta):
        from .schedule import format_duration

        return format_duration(timedelta(seconds=limit))
    return f"{limit:g}"


def _coerce_type(kind: Any, value: Any, where: str) -> Any:
    import typing

    from .schedule import parse_duration

    origin = typing.get_origin(kind)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        if abs(value) > _NUMBER_LIMIT * 1000:
            raise ConfigError(f"{where}: number too large: {value}")
        return value
    if kind is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        if any(ord(c) < 32 and c not in "\t" for c in value):
            raise ConfigError(f"{where}: control characters are not allowed")
        return value
    if kind is Secret:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string")
        return Secret(value)
    if kind is timedelta:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if kind is Path:
        if not isinstance(value, str) or not value or "\x00" in value:
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = typing.get_args(kind)[0]
        return tuple(_coerce_type(inner, item, f"{where}[{i}]") for i, item in enumerate(value))
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None or value == "":
            return None
        return _coerce_type(args[0], value, where)
    raise ConfigError(f"{where}: unsupported setting type {kind!r}")  # pragma: no cover - a job author's bug
