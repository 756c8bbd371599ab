"""How email-queue turns a row into a message and hands it over: SMTP, or one .eml file per message.

A transport's `send(message)` returns when the message was accepted, or raises:

- Deferred: this message, later (a 4xx reply).
- Rejected: this message, never (a 5xx reply, an unusable recipient address).
- Unavailable: nothing can be delivered now (no connection, or the connection
  was lost again right after a reconnect); the rows are retried later.
- Refused: the server refuses *us* (login, TLS, the sender address) or the
  outbox cannot be written; that is configuration, so rows are left untouched.

Every text that comes from the SMTP exchange goes through `_Scrubber` first:
the SMTP password, its base64 forms (a careless server may echo an AUTH line
back) and every registered secret are masked before the text can reach a log,
a row or the history.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cronwarden import Secret, redact

if TYPE_CHECKING:
    import smtplib

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_7BIT_SAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ADDRESS = re.compile(r"[^@\s<>(),;:\"\[\]\\]+@[^@\s<>(),;:\"\[\]\\]+")
_LONGEST_LINE = 998
_LONGEST_RAW_SUBJECT = 900


class DeliveryError(Exception):
    """A failure of one message; str() is the server's reply or the reason, secrets masked."""


class Deferred(DeliveryError):
    """Worth another attempt later (SMTP 4xx)."""


class Rejected(DeliveryError):
    """Never deliverable as it stands (SMTP 5xx, an invalid recipient)."""


class Unavailable(Exception):
    """The transport cannot deliver anything now."""


class Refused(Exception):
    """The server refuses this sender or its credentials, or the outbox is unusable: configuration."""


class _ConnectionLost(Exception):
    """The SMTP connection died under a message (dropped, timed out, 421)."""


@dataclass(frozen=True)
class Sender:
    """The configured From: the envelope address, the header value and the Message-ID domain."""

    envelope: str
    header: str
    domain: str

    @classmethod
    def parse(cls, from_address: str) -> Sender:
        from email.utils import formataddr, parseaddr

        name, address = parseaddr(from_address)
        return cls(address, formataddr((name, address), charset="utf-8"), address.rpartition("@")[2].lower())


@dataclass(frozen=True)
class Message:
    """What a transport delivers: the envelope recipient and the RFC 5322 bytes (CRLF line ends)."""

    name: str
    recipient: str
    data: bytes


def compose(*, name: str, sender: Sender, to_address: str, subject: str, body: str, message_id: str,
            date: datetime) -> Message:
    """Build a text/plain message by hand: the stdlib EmailMessage costs ~1 ms a message, this ~10 µs;
    tests/builtin/test_mail_compose.py holds it to what the stdlib's SMTP policy reads back.

    Header values never carry a CR or LF (no header injection from queued data); non-ASCII
    subjects and names are RFC 2047 words; a body that is not short-lined ASCII goes out
    quoted-printable, so the server needs no 8BITMIME.
    """
    from email.utils import format_datetime

    recipient, to_header = _recipient(to_address)
    text = body.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    if text.isascii() and not _NOT_7BIT_SAFE.search(text) and max(map(len, text.split("\n"))) <= _LONGEST_LINE:
        encoding, payload = "7bit", text.replace("\n", "\r\n").encode("ascii")
    else:
        import binascii

        encoding = "quoted-printable"
        payload = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    head = (
        f"From: {sender.header}\r\n"
        f"To: {to_header}\r\n"
        f"Subject: {_subject(subject)}\r\n"
        f"Date: {format_datetime(date)}\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
    )
    return Message(name, recipient, head.encode("ascii") + payload)


def _recipient(to_address: str) -> tuple[str, str]:
    """(envelope address, To: header) from `addr` or `Name <addr>`; Rejected when unusable."""
    from email.utils import formataddr, parseaddr

    text = to_address.strip()
    if _ADDRESS.fullmatch(text) and text.isascii():
        return text, text
    name, address = parseaddr(text) if not _CONTROL.search(text) else ("", "")
    whole = text in (address, f"<{address}>") if not name else text.endswith(f"<{address}>")
    if not _ADDRESS.fullmatch(address) or not whole:
        raise Rejected(f"invalid recipient address {to_address[:200]!r}")
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        raise Rejected(f"recipient {address!r}: a non-ASCII local part needs SMTPUTF8, which is not supported")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise Rejected(f"recipient {address!r}: invalid domain") from None
    address = f"{local}@{domain}"
    return address, formataddr((_CONTROL.sub(" ", name), address), charset="utf-8")


def _subject(subject: str) -> str:
    text = _CONTROL.sub(" ", subject)
    if text.isascii() and len(text) <= _LONGEST_RAW_SUBJECT:
        return text
    from email.header import Header

    charset = "us-ascii" if text.isascii() else "utf-8"
    return Header(text, charset, header_name="Subject").encode(linesep="\r\n")


class _Scrubber:
    """Masks the password and its base64 forms (AUTH PLAIN/LOGIN payloads), then every known secret."""

    def __init__(self, username: str, password: Secret) -> None:
        secret = password.reveal()
        self._forms = [secret] if secret else []
        if secret:
            for raw in (secret, f"\0{username}\0{secret}"):
                encoded = base64.b64encode(raw.encode("utf-8")).decode("ascii")
                self._forms += [encoded, encoded.rstrip("=")]

    def __call__(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, "***")
        return redact(" ".join(text.split()))


class SmtpTransport:
    """One connection for the whole run; a lost connection is reopened once and the message resent once.

    The resend after a reconnect is not counted as an attempt: the first try may have been
    delivered (the connection died before the reply), which is what at-least-once and the
    stable Message-ID allow. A connection lost again on the resend means the server is
    unwell: Unavailable, and the run stops offering it mail.
    """

    def __init__(self, *, host: str, port: int, security: str, username: str, password: Secret,
                 timeout: float, sender: Sender) -> None:
        self._host, self._port, self._security = host, port, security
        self._username, self._password, self._timeout = username, password, timeout
        self._sender = sender
        self._scrub = _Scrubber(username, password)
        self._conn: smtplib.SMTP | None = None

    @property
    def where(self) -> str:
        return f"{self._host}:{self._port}"

    def send(self, message: Message) -> None:
        if self._conn is None:
            self._connect()
        try:
            self._send_once(message)
            return
        except _ConnectionLost:
            self._discard()
        self._connect()
        try:
            self._send_once(message)
        except _ConnectionLost as again:
            self._discard()
            raise Unavailable(f"SMTP server {self.where} lost the connection again after a reconnect: "
                              f"{again}") from None

    def close(self) -> None:
        """QUIT politely; a server that is already gone is simply closed."""
        import smtplib

        if self._conn is None:
            return
        try:
            self._conn.quit()
        except (smtplib.SMTPException, OSError):
            self._conn.close()
        self._conn = None

    def _connect(self) -> None:
        import smtplib
        import ssl

        from . import smtp_client

        conn: smtplib.SMTP | None = None
        try:
            if self._security == "tls":
                conn = smtp_client.SMTP_SSL(self._host, self._port, timeout=self._timeout,
                                            context=ssl.create_default_context())
            else:
                conn = smtp_client.SMTP(self._host, self._port, timeout=self._timeout)
            conn.ehlo()
            if self._security == "starttls":
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
        except ssl.SSLError as exc:
            self._abandon(conn)
            raise Refused(self._scrub(f"TLS with SMTP server {self.where} failed: {exc}")) from None
        except smtplib.SMTPNotSupportedError as exc:
            self._abandon(conn)
            raise Refused(self._scrub(f"SMTP server {self.where}: {exc}")) from None
        except (smtplib.SMTPException, OSError) as exc:
            self._abandon(conn)
            raise Unavailable(self._scrub(f"cannot reach SMTP server {self.where}: {_describe(exc)}")) from None
        if self._username:
            self._login(conn)
        self._conn = conn

    def _login(self, conn: smtplib.SMTP) -> None:
        """A refused login is configuration (Refused) unless the server says to try later (4xx)."""
        import smtplib

        try:
            conn.login(self._username, self._password.reveal())
        except smtplib.SMTPAuthenticationError as exc:
            self._abandon(conn)
            text = self._scrub(f"SMTP server {self.where} refused the login of {self._username!r}: "
                               f"{_reply(exc.smtp_code, exc.smtp_error)}")
            if 400 <= exc.smtp_code < 500:
                raise Unavailable(text) from None
            raise Refused(text) from None
        except smtplib.SMTPException as exc:
            self._abandon(conn)
            if isinstance(exc, smtplib.SMTPServerDisconnected):
                raise Unavailable(self._scrub(f"SMTP server {self.where} lost the connection during login: "
                                              f"{_describe(exc)}")) from None
            raise Refused(self._scrub(f"SMTP server {self.where}: cannot log in as {self._username!r}: "
                                      f"{exc}")) from None
        except OSError as exc:
            self._abandon(conn)
            raise Unavailable(self._scrub(f"SMTP server {self.where} lost the connection during login: "
                                          f"{_describe(exc)}")) from None

    def _send_once(self, message: Message) -> None:
        import smtplib

        assert self._conn is not None
        try:
            self._conn.sendmail(self._sender.envelope, [message.recipient], message.data)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            raise self._reply_error(code, reply) from None
        except smtplib.SMTPSenderRefused as exc:
            if exc.smtp_code >= 500 and exc.smtp_code != 552:
                raise Refused(self._scrub(f"SMTP server {self.where} refused the sender {exc.sender!r}: "
                                          f"{_reply(exc.smtp_code, exc.smtp_error)}")) from None
            raise self._reply_error(exc.smtp_code, exc.smtp_error) from None
        except smtplib.SMTPResponseException as exc:
            raise self._reply_error(exc.smtp_code, exc.smtp_error) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise Rejected(self._scrub(str(exc))) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise _ConnectionLost(self._scrub(_describe(exc))) from None

    def _reply_error(self, code: int, reply: bytes | str) -> Exception:
        text = self._scrub(_reply(code, reply))
        if code == 421 or self._conn is None or self._conn.sock is None:
            return _ConnectionLost(text)
        return Deferred(text) if 400 <= code < 500 else Rejected(text)

    def _discard(self) -> None:
        self._abandon(self._conn)
        self._conn = None

    @staticmethod
    def _abandon(conn: smtplib.SMTP | None) -> None:
        if conn is not None:
            conn.close()


class FileTransport:
    """One `<row id>.eml` per message in `directory`, written to a temporary file and renamed.

    The folder is created 0700 and each file 0600 (mkstemp's mode): messages carry users' data.

    A resend (after a crash or a reclaim) replaces the same file, so the outbox never holds
    two copies of a message.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._ready = False

    @property
    def where(self) -> str:
        return str(self._directory)

    def send(self, message: Message) -> None:
        from cronwarden import atomic_write, private_directory

        target = self._directory / f"{message.name}.eml"
        try:
            if not self._ready:
                private_directory(self._directory)
                self._ready = True
            atomic_write(target, message.data)
        except OSError as exc:
            raise Refused(f"cannot write {target}: {exc.strerror or exc}") from None

    def close(self) -> None:
        """Nothing stays open between messages."""


def _reply(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {' '.join(text.split())}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
