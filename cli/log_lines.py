"""A log line's text and JSON forms, without the logging module.

cli/logs.py's formatters write every line through these; a locked tick's one line (cli/front.py) is
written with them directly, so that a tick does not import logging (with threading, traceback and
string) to say that another process holds the lock.
"""

from __future__ import annotations

from datetime import datetime, timezone


def text(created: float, level: str, job: str | None, run_id: int | None, message: str) -> str:
    """`2026-01-01T03:00:00.123Z INFO job run=7: message`, unmasked."""
    stamp = datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    stamp = stamp[:-4] + "Z"
    where = ""
    if job:
        where = f" {job}" + (f" run={run_id}" if run_id is not None else "")
    return f"{stamp} {level}{where}: {message}"


def json_entry(created: float, level: str, logger: str, job: str | None, run_id: int | None,
               message: str) -> dict[str, object]:
    """The JSON line's object (a traceback, when there is one, is added under "traceback")."""
    return {
        "time": datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds"),
        "level": level.lower(),
        "logger": logger,
        "job": job,
        "run_id": run_id,
        "event": message,
    }


def as_json(entry: dict[str, object]) -> str:
    import json  # here: a text-format line needs none

    return json.dumps(entry, default=str)
