"""Ready-made `check=` validators for job settings, shared by the built-ins and users' jobs."""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


def identifier(value: str) -> str | None:
    """Table and column names: plain SQL identifiers only (optionally schema.table)."""
    if not _IDENTIFIER.match(value):
        return f"not a plain SQL identifier: {value!r}"
    return None
