"""Logging: plain text or one JSON object per line on stderr, secrets masked on the way out."""

from __future__ import annotations

import logging
import sys

from . import log_lines

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
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return redact(log_lines.text(record.created, record.levelname, getattr(record, "job", None),
                                     getattr(record, "run_id", None), message))


class JsonFormatter(_Redacting):
    def format(self, record: logging.LogRecord) -> str:
        return redact(self.unmasked(record))

    def unmasked(self, record: logging.LogRecord) -> str:
        entry = log_lines.json_entry(record.created, record.levelname, record.name, getattr(record, "job", None),
                                     getattr(record, "run_id", None), record.getMessage())
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return log_lines.as_json(entry)


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
