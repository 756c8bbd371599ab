"""How fast each end of a database connection notices that the other vanished, from one setting.

`[locks] host_loss_bound` (default 60 s) is the time within which another host can take and use a job
whose holder's host vanished. Every mechanism below fires within half of it, so the server has ended
the vanished session (freeing its advisory lock, GET_LOCK or row locks) with the other half left for
the next invocation to start, take the lock and finish a batch:

- PostgreSQL, per session through libpq's `options` (user-settable, no superuser needed): server TCP
  keepalives (idle B/4, then 3 probes B/12 apart, in whole seconds), `tcp_user_timeout` B/2 (unacknowledged data), and
  `idle_in_transaction_session_timeout` B/2 (a batch takes ~0.2 s; a session idle inside a transaction
  that long is dead). It does not touch `idle_session_timeout`: the lock session is idle between
  batches by design. The client (libpq) uses the same keepalives and `tcp_user_timeout`, so a
  partitioned holder notices as fast as the server.
- MariaDB/MySQL, per session: `net_read_timeout`, `net_write_timeout` and `wait_timeout` B/2 (the
  server has no per-session TCP keepalive, so the lock session is pinged every B/6 to stay busy),
  `innodb_lock_wait_timeout` B/4 (a wait on a vanished holder's rows ends before the client's read
  timeout, as a retryable error). PyMySQL reads and writes give up after B/2 (handshake included).
- Both: a connection attempt gives up after B/12 (at least 2 s, libpq's minimum).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .records import FrozenRecord

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any

DEFAULT_BOUND_SECONDS = 60.0
KEEPALIVE_PROBES = 3


@dataclass(init=False, repr=False, eq=False)
class HostLossBounds(FrozenRecord):
    """The timeouts and session settings that follow from one host_loss_bound (seconds)."""

    bound: float = DEFAULT_BOUND_SECONDS

    def __init__(self, bound: float = DEFAULT_BOUND_SECONDS) -> None:
        object.__setattr__(self, "bound", bound)

    @property
    def notice(self) -> float:
        """Seconds within which each side has noticed the other vanished."""
        return self.bound / 2

    @property
    def connect_timeout(self) -> int:
        return max(2, round(self.bound / 12))

    @property
    def keepalives_interval(self) -> int:
        return max(1, int(self.bound / 12))

    @property
    def keepalives_idle(self) -> int:
        """B/4, so that idle + 3 probes fit in B/2 (whole seconds: B/2 - 3 s when B < 12 s)."""
        return max(1, int(self.notice - KEEPALIVE_PROBES * self.keepalives_interval))

    @property
    def tcp_user_timeout_ms(self) -> int:
        return int(self.notice * 1000)

    @property
    def net_timeout(self) -> int:
        """MariaDB/MySQL net_read/net_write/wait_timeout (whole seconds)."""
        return max(1, int(self.notice))

    @property
    def lock_wait_timeout(self) -> int:
        """innodb_lock_wait_timeout: shorter than the client's read timeout, so the server answers first."""
        return max(1, int(self.bound / 4))

    @property
    def lock_ping_seconds(self) -> float:
        """How often an otherwise idle MariaDB/MySQL lock session is pinged (well inside wait_timeout)."""
        return self.bound / 6

    def postgres_server(self) -> dict[str, int]:
        """The GUCs each PostgreSQL session sets for itself."""
        return {
            "tcp_keepalives_idle": self.keepalives_idle,
            "tcp_keepalives_interval": self.keepalives_interval,
            "tcp_keepalives_count": KEEPALIVE_PROBES,
            "tcp_user_timeout": self.tcp_user_timeout_ms,
            "idle_in_transaction_session_timeout": self.tcp_user_timeout_ms,
        }

    def postgres_client(self) -> dict[str, int]:
        """libpq connection parameters."""
        return {
            "connect_timeout": self.connect_timeout,
            "keepalives": 1,
            "keepalives_idle": self.keepalives_idle,
            "keepalives_interval": self.keepalives_interval,
            "keepalives_count": KEEPALIVE_PROBES,
            "tcp_user_timeout": self.tcp_user_timeout_ms,
        }

    def postgres_connect_args(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """libpq parameters for create_engine: the URL's own values win, its `options` are kept after ours."""
        args: dict[str, Any] = {k: v for k, v in self.postgres_client().items() if k not in given}
        ours = " ".join(f"-c {name}={value}" for name, value in self.postgres_server().items())
        theirs = given.get("options")
        args["options"] = f"{ours} {theirs}" if isinstance(theirs, str) and theirs else ours
        return args

    def mysql_server(self) -> dict[str, int]:
        """The session variables each MariaDB/MySQL session sets for itself."""
        return {
            "net_read_timeout": self.net_timeout,
            "net_write_timeout": self.net_timeout,
            "wait_timeout": self.net_timeout,
            "innodb_lock_wait_timeout": self.lock_wait_timeout,
        }

    def mysql_client(self) -> dict[str, float]:
        """PyMySQL connection arguments (read_timeout also bounds the handshake with a silent server)."""
        return {"connect_timeout": self.connect_timeout, "read_timeout": self.notice, "write_timeout": self.notice}

    def mysql_session_sql(self, init_command: str = "") -> str | None:
        """The SET for each new session, leaving out what the URL's own init_command sets (it wins)."""
        import re

        mine = {k: v for k, v in self.mysql_server().items()
                if not re.search(rf"(?<![a-z0-9_]){k}(?![a-z0-9_])", init_command.lower())}
        return "SET SESSION " + ", ".join(f"{name} = {value}" for name, value in mine.items()) if mine else None

    def describe(self, dialect: str) -> dict[str, Any]:
        """What `cronwarden list --json` prints: the derived values for this database."""
        found: dict[str, Any] = {"host_loss_bound_seconds": self.bound, "notice_seconds": self.notice}
        if dialect == "postgresql":
            found.update(server_session=self.postgres_server(), client=self.postgres_client())
        elif dialect == "mysql":
            found.update(server_session=self.mysql_server(), client=self.mysql_client(),
                         lock_session_ping_seconds=self.lock_ping_seconds)
        return found
