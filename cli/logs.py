"""Logging: plain text or one JSON object per line on stderr, secrets masked on the way out."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from jobs.secrets import redact


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
        return redact(json.dumps(entry, default=str))


def setup(fmt: str, level: int) -> None:
    root = logging.getLogger("cronwarden")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
