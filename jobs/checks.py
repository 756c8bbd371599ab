"""Ready-made `check=` validators for job settings, shared by the built-ins and users' jobs."""

from __future__ import annotations

import re

# Compiled (and cached by re) at the first check: a tick with the default settings never checks one.
_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$"


def identifier(value: str) -> str | None:
    """Table and column names: plain SQL identifiers only (optionally schema.table)."""
    if not re.match(_IDENTIFIER, value):
        return f"not a plain SQL identifier: {value!r}"
    return None
