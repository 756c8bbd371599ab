"""PyMySQL connections whose opportunistic TLS does not load the system's certificate store.

Given no TLS option, PyMySQL (1.2 and later) connects in PREFERRED mode: TLS when the server offers it,
verifying nothing (CERT_NONE, no host name check). It still builds that context with
`ssl.create_default_context()`, which reads every CA certificate of the system: about 24 ms of CPU on
each connection, a quarter of a not-due tick on MariaDB, for a store that CERT_NONE never consults.
Here PREFERRED mode gets the same context without the store (built once per process); any TLS option
given (ssl_ca, ssl_verify_cert, ...) is PyMySQL's own, unchanged.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    import ssl
    from typing import Any

_UNVERIFIED: ssl.SSLContext | None = None
_CLASS: type | None = None


def connect(**kwargs: Any) -> Any:
    """pymysql.connect(**kwargs), PREFERRED-mode TLS without the certificate store."""
    return connection_class()(**kwargs)


def connection_class() -> type:
    """The connection class, for SQLAlchemy's do_connect as for the quick path."""
    global _CLASS
    if _CLASS is None:
        from pymysql.connections import Connection

        class PreferredTLS(Connection):
            def _create_ssl_ctx(self, sslp: Any) -> Any:
                if isinstance(sslp, dict) and not sslp:  # PREFERRED mode: what PyMySQL builds, minus the store
                    return _unverified()
                return super()._create_ssl_ctx(sslp)

        _CLASS = PreferredTLS
    return _CLASS


def _unverified() -> ssl.SSLContext:
    global _UNVERIFIED
    if _UNVERIFIED is None:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _UNVERIFIED = ctx
    return _UNVERIFIED
