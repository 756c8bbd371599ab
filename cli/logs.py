"""Logging: plain text or one JSON object per line on stderr, secrets masked on the way out."""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone

_format = "text"


def redact(text: str) -> str:
    """Imported late: the shadowing guard reports in this format before any `jobs` package is imported."""
    from jobs.secrets import redact as mask

    return mask(text)


class _Redacting(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class TextFormatter(_Redacting):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        stamp = stamp[:-4] + "Z"
        job = getattr(record, "job", None)
        run_id = getattr(record, "run_id", None)
        where = ""
        if job:
            where = f" {job}" + (f" run={run_id}" if run_id is not None else "")
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return redact(f"{stamp} {record.levelname}{where}: {message}")


class JsonFormatter(_Redacting):
    def format(self, record: logging.LogRecord) -> str:
        return redact(self.unmasked(record))

    def unmasked(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "job": getattr(record, "job", None),
            "run_id": getattr(record, "run_id", None),
            "event": record.getMessage(),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        import json  # here: a text-format lock line, the quick path's only log line, needs none

        return json.dumps(entry, default=str)


def use_format(fmt: str) -> None:
    """The format of every line on stderr, the final error line included (known before the logging is set up)."""
    global _format
    _format = fmt


def error_line(message: str, *, masked: bool = True) -> str:
    """A command's final error line: `cronwarden: error: ...`, or under json one more JSON log line."""
    if _format != "json":
        text = f"cronwarden: error: {message}"
        return redact(text) if masked else text
    record = logging.LogRecord("cronwarden", logging.ERROR, __file__, 0, "%s", (message,), None)
    return JsonFormatter().format(record) if masked else JsonFormatter().unmasked(record)


def setup(fmt: str, level: int) -> None:
    use_format(fmt)
    root = logging.getLogger("cronwarden")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
