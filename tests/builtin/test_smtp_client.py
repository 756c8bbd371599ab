"""The lean SMTP client puts on the wire exactly what smtplib does: the same MAIL, RCPT and DATA bytes for
plain and unusual addresses, and for messages whose lines start with a dot."""

from __future__ import annotations

import queue
import smtplib
import socket
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.builtin import smtp_client

_ODD_ADDRESSES = [
    "user@example.org", "First.Last+tag@sub.example.co", "o'brien@x.example", "a{b}|c~d@x.example",
    "a..b@x.example", ".a@x.example", "a.@x.example", '"a b"@x.example', "Ann <ann@b.example>",
    "a@[127.0.0.1]", "a@-x.example", "a@x..example", "<a@x.example>", "a(comment)@x.example", "@x.example",
    "a@", "a", "", "a@x.example.", "A@X.EXAMPLE",
]


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from("abcXYZ09.!#$%&'*+/=?^_`{|}~-@\"()<>[],;: \\"), max_size=20))
def test_an_address_is_quoted_as_smtplib_quotes_it(address):
    assert smtp_client.quote(address) == smtplib.quoteaddr(address)


def test_the_listed_odd_addresses_are_quoted_as_smtplib_quotes_them():
    for address in _ODD_ADDRESSES:
        assert smtp_client.quote(address) == smtplib.quoteaddr(address), address


class _Recorder:
    """A loopback SMTP server that accepts everything and keeps every byte each connection sent."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.transcripts: queue.Queue[bytes] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                self.transcripts.put(self._session(conn))

    @staticmethod
    def _session(conn: socket.socket) -> bytes:
        received = b""
        reader = conn.makefile("rb")
        conn.sendall(b"220 recorder ready\r\n")
        while line := reader.readline():
            received += line
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-recorder\r\n250-SIZE 1000000\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go ahead\r\n")
                while (data := reader.readline()) not in (b".\r\n", b""):
                    received += data
                received += b".\r\n"
                conn.sendall(b"250 accepted\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                break
            else:
                conn.sendall(b"250 ok\r\n")
        return received

    def close(self) -> None:
        self.listener.close()


def _transcript(client: type[smtplib.SMTP], server: _Recorder, messages: list[tuple[str, str, bytes]]) -> bytes:
    conn = client("127.0.0.1", server.port, timeout=10)
    conn.ehlo("client.example")
    for sender, recipient, data in messages:
        conn.sendmail(sender, [recipient], data)
    conn.quit()
    return server.transcripts.get(timeout=10)


def test_the_lean_client_sends_the_bytes_smtplib_sends():
    bodies = [b"Subject: a\r\n\r\nplain\r\n", b"Subject: b\r\n\r\n.leading dot\r\nand\r\n.. two\r\n",
              b".starts with a dot\r\n", b"Subject: c\r\n\r\nno final line end", b"Subject: d\r\n\r\nlone\n.dot\n"]
    messages = [(sender, recipient, body)
                for sender, recipient in [("noreply@shop.example", "user@example.org"),
                                          ("Shop <noreply@shop.example>", '"a b"@x.example'),
                                          ("noreply@shop.example", "a..b@x.example")]
                for body in bodies]
    server = _Recorder()
    try:
        plain = _transcript(smtplib.SMTP, server, messages)
        lean = _transcript(smtp_client.SMTP, server, messages)
    finally:
        server.close()
    assert b"MAIL FROM:<noreply@shop.example> size=" in plain.replace(b"mail", b"MAIL")
    assert lean == plain
