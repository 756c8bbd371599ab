"""A real SMTP server (aiosmtpd) on 127.0.0.1 whose replies a test scripts, recording what it accepted."""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CI

STALL_LIMIT_SECONDS = 60.0


def free_port() -> int:
    """A port nothing listens on (the OS's pick, released again)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.content, policy=policy.default)  # type: ignore[return-value]


@dataclass
class ScriptedHandler:
    """Answers each message's end of DATA with the next entry of `script`, then with `default`.

    "250" accepts and records it; "421 ...", "451 ...", "550 ..." reply with that line ("421"
    then closes the connection, as real servers do); "drop" closes the connection without a
    reply; "stall" holds the reply until `release` is set (or STALL_LIMIT_SECONDS pass).
    `offered` keeps every message whose DATA arrived, whatever the reply; `received` only the
    accepted ones. `password` set: AUTH must present it; a refusal echoes the credentials back
    (as a careless server might), so a test can prove they are scrubbed.
    """

    script: list[str] = field(default_factory=list)
    default: str = "250"
    received: list[Received] = field(default_factory=list)
    offered: list[Received] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    password: str | None = None
    release: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        action = self.script.pop(0) if self.script else self.default
        message = Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        self.offered.append(message)
        if action == "stall":
            waited = 0.0
            while not self.release.is_set() and waited < STALL_LIMIT_SECONDS:
                await asyncio.sleep(0.02)
                waited += 0.02
            return "451 4.3.0 stalled"
        if action == "drop":
            server.transport.close()
            return "451 4.3.0 never seen"
        if action.startswith("421"):
            asyncio.get_running_loop().call_soon(server.transport.close)
            return action
        if action == "250":
            self.received.append(message)
            return "250 2.0.0 OK queued"
        return action

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult

        login = auth_data.login.decode()
        secret = auth_data.password.decode()
        self.logins.append(login)
        if self.password is not None and secret == self.password:
            return AuthResult(success=True)
        echoed = base64.b64encode(f"\0{login}\0{secret}".encode()).decode()
        return AuthResult(success=False, handled=False,
                          message=f"535 5.7.8 credentials {login}/{secret} ({echoed}) rejected")


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: ScriptedHandler

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def script(self, *replies: str, default: str = "250") -> None:
        self.handler.script[:] = list(replies)
        self.handler.default = default

    def config(self, **extra: Any) -> str:
        """The [jobs.email-queue] table pointing at this server (plus extra keys)."""
        keys = {"smtp_host": self.host, "smtp_port": self.port, "from_address": "Shop <noreply@shop.example>",
                **extra}
        lines = ["[jobs.email-queue]"] + [f"{key} = {_toml(value)}" for key, value in keys.items()]
        return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.fixture
def start_smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    """start_smtp_server(**controller_options) -> a running SmtpServer; all are stopped after the test."""
    from aiosmtpd.controller import Controller

    running: list[tuple[Controller, ScriptedHandler]] = []

    def start(**options: Any) -> SmtpServer:
        handler = ScriptedHandler()
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(), auth_require_tls=False,
                                authenticator=handler.authenticate, ready_timeout=10, **options)
        controller.start()
        running.append((controller, handler))
        return SmtpServer("127.0.0.1", controller.port, handler)

    try:
        yield start
    finally:
        for controller, handler in running:
            handler.release.set()
            controller.stop()


@pytest.fixture
def smtp_server(start_smtp_server: Callable[..., SmtpServer]) -> SmtpServer:
    return start_smtp_server()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cert, key): a self-signed certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        if CI:
            raise RuntimeError("the openssl command is needed for the TLS tests under CI=true")
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def server_tls_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context
