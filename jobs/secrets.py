"""Secrets that never print, and a redactor for text that leaves the process."""

from __future__ import annotations

import re

_known: set[str] = set()
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<tail>@)")


class Secret:
    """A value that shows as *** in reprs, logs and tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        remember(value)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def remember(value: str | None) -> None:
    """Register a secret value so that redact() masks it wherever it appears."""
    if value and len(value) >= 3:
        _known.add(value)


def redact(text: str) -> str:
    """Mask registered secrets and passwords embedded in URLs."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + "***" + m.group("tail"), text)
    for value in sorted(_known, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "***")
    return text
