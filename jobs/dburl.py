"""Plain database URLs understood without SQLAlchemy, for the quick path (cli/front.py).

Only the common shapes are recognised: sqlite:///file, and postgresql|mysql|mariadb://[user[:password]@]
host[:port]/database with no query string. Anything else is "not plain" (None), and the quick path hands
the invocation over to the full CLI, which parses it with SQLAlchemy as always
(tests/test_quick_path.py checks both parsers agree on the plain shapes).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from .records import FrozenRecord

_SCHEMES = {
    "sqlite": "sqlite",
    "postgresql": "postgresql", "postgres": "postgresql", "postgresql+psycopg": "postgresql",
    "mysql": "mysql", "mariadb": "mysql", "mysql+pymysql": "mysql", "mariadb+pymysql": "mysql",
}


class NotPlain(Exception):
    """The URL is not one this module vouches for: hand over to the full path."""


@dataclass(init=False, repr=False, eq=False)
class PlainURL(FrozenRecord):
    """The parts of a plain URL the drivers connect with."""

    dialect: str  # sqlite, postgresql or mysql
    database: str  # the SQLite file, or the server's database name
    host: str = ""
    port: int | None = None
    user: str | None = None
    password: str | None = None

    def __init__(self, dialect: str, database: str, host: str = "", port: int | None = None,
                 user: str | None = None, password: str | None = None) -> None:
        object.__setattr__(self, "dialect", dialect)
        object.__setattr__(self, "database", database)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "password", password)


def parse(url: str) -> PlainURL:
    """The parts of a plain URL; NotPlain for any other."""
    scheme, sep, rest = url.partition("://")
    dialect = _SCHEMES.get(scheme.lower()) if sep else None
    if dialect is None or any(c in url for c in "?#") or any(c.isspace() for c in url):
        raise NotPlain(url)
    if dialect == "sqlite":
        path = rest[1:] if rest.startswith("/") else ""
        if not path or path == ":memory:" or "%" in path:
            raise NotPlain(url)
        return PlainURL("sqlite", path)
    netloc, slash, database = rest.partition("/")
    if not slash or not database or "/" in database or "%" in database:
        raise NotPlain(url)
    credentials, at, hostport = netloc.rpartition("@")
    user = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        user, password = unquote(user), (unquote(secret) if colon else None)
    host, colon, port = hostport.partition(":")
    if not host or "[" in host or "%" in host or (colon and not (port.isascii() and port.isdigit())):
        raise NotPlain(url)
    return PlainURL(dialect, database, host, int(port) if colon else None, user or None, password)


def check(url: str) -> None:
    """config.load's URL check on the quick path: a plain URL's password is masked like any other."""
    from .secrets import remember

    remember(parse(url).password)
