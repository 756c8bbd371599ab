"""Dead-man pings (healthchecks.io protocol) against real local HTTP servers."""

from __future__ import annotations

import socket
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from jobs.observe.pings import PingObserver, ping_url
from tests.conftest import refusing_table


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """What a local HTTP server received, in order."""

    port: int
    status: int = 200
    requests: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def http_recorder(status: int = 200) -> Iterator[Recorder]:
    """A real HTTP server on 127.0.0.1 in a thread, answering `status` to every request."""
    recorder = Recorder(port=0, status=status)

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            parts = urlsplit(self.path)
            recorder.requests.append(Received(self.command, parts.path, parse_qs(parts.query),
                                              dict(self.headers.items()), self.rfile.read(length)))
            self.send_response(recorder.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_GET = do_POST = do_PUT = _handle

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def hanging_server() -> Iterator[str]:
    """Accepts connections (the kernel completes them) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def dead_url() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _config(url: str, *, table: str | None = None) -> str:
    lines = ["[jobs.refresh-token-cleanup]", f'ping_url = "{url}"']
    if table:
        lines.append(f'table = "{table}"')
    return "\n".join(lines) + "\n"


def test_ping_url_appends_the_event_and_keeps_the_query() -> None:
    assert ping_url("https://hc.example/abc", "start", "r1") == "https://hc.example/abc/start?rid=r1"
    assert ping_url("https://hc.example/key/slug?create=1", "fail", "r1") == \
        "https://hc.example/key/slug/fail?create=1&rid=r1"
    assert ping_url("https://hc.example/abc/", "", "r1") == "https://hc.example/abc?rid=r1"


def test_successful_run_pings_start_then_success_with_one_rid(sqlite_workspace, cli) -> None:
    with http_recorder() as server:
        sqlite_workspace.write_config(_config(f"{server.url}/ping/abc"))
        result = cli(sqlite_workspace, "refresh-token-cleanup", "--force")
    assert result.exit_code == 0, result.stderr
    assert [r.path for r in server.requests] == ["/ping/abc/start", "/ping/abc"]
    rids = {r.query["rid"][0] for r in server.requests}
    assert len(rids) == 1
    uuid.UUID(rids.pop())
    assert b"succeeded" in server.requests[1].body


def test_failing_run_pings_start_then_fail_with_the_error(sqlite_workspace, cli) -> None:
    refusing_table(sqlite_workspace.db_url)
    with http_recorder() as server:
        sqlite_workspace.write_config(_config(f"{server.url}/ping/abc", table="nope"))
        result = cli(sqlite_workspace, "refresh-token-cleanup", "--force")
    assert result.exit_code == 1
    assert [r.path for r in server.requests] == ["/ping/abc/start", "/ping/abc/fail"]
    assert server.requests[0].query["rid"] == server.requests[1].query["rid"]
    assert b"nope" in server.requests[1].body


def test_skipped_tick_does_not_ping(sqlite_workspace, cli) -> None:
    with http_recorder() as server:
        sqlite_workspace.write_config(_config(f"{server.url}/ping/abc"))
        assert cli(sqlite_workspace, "refresh-token-cleanup").exit_code == 0
        server.requests.clear()
        result = cli(sqlite_workspace, "refresh-token-cleanup")
    assert result.exit_code == 0
    assert server.requests == []


def test_monitor_server_errors_are_retried_within_the_attempts(sqlite_workspace, cli, monkeypatch) -> None:
    monkeypatch.setattr(PingObserver, "attempts", 2)
    monkeypatch.setattr(PingObserver, "backoff", 0.01)
    with http_recorder(status=503) as server:
        sqlite_workspace.write_config(_config(f"{server.url}/ping/abc"))
        result = cli(sqlite_workspace, "refresh-token-cleanup", "--force")
    assert result.exit_code == 0, result.stderr
    assert [r.path for r in server.requests] == ["/ping/abc/start"] * 2 + ["/ping/abc"] * 2
    assert "dead-man ping (start) not delivered: HTTP 503" in result.stderr


def test_unreachable_monitor_never_fails_the_job_nor_leaks_the_url(sqlite_workspace, cli, monkeypatch) -> None:
    monkeypatch.setattr(PingObserver, "backoff", 0.01)
    url = f"{dead_url()}/ping/secret-key-123"
    sqlite_workspace.write_config(_config(url))
    result = cli(sqlite_workspace, "refresh-token-cleanup", "--force", "--json")
    assert result.exit_code == 0
    assert '"status": "succeeded"' in result.stdout
    assert "dead-man ping (success) not delivered" in result.stderr
    assert "secret-key-123" not in result.stderr + result.stdout


def test_hanging_monitor_costs_at_most_the_configured_budget(sqlite_workspace, cli, monkeypatch) -> None:
    monkeypatch.setattr(PingObserver, "timeout", 0.3)
    monkeypatch.setattr(PingObserver, "attempts", 2)
    monkeypatch.setattr(PingObserver, "budget", 0.5)
    waits: dict[str, list[float]] = {}
    real_urlopen = urllib.request.urlopen

    def recording_urlopen(request, timeout):
        waits.setdefault(urlsplit(request.full_url).path, []).append(timeout)
        return real_urlopen(request, timeout=timeout)

    monkeypatch.setattr(urllib.request, "urlopen", recording_urlopen)
    with hanging_server() as url:
        sqlite_workspace.write_config(_config(f"{url}/ping/abc"))
        result = cli(sqlite_workspace, "refresh-token-cleanup", "--force")
        history = cli(sqlite_workspace, "history", "--json")
    assert result.exit_code == 0, result.stderr
    assert '"status": "succeeded"' in history.stdout
    assert "not delivered" in result.stderr
    assert set(waits) == {"/ping/abc/start", "/ping/abc"}
    for one_ping in waits.values():
        assert 1 <= len(one_ping) <= PingObserver.attempts
        assert all(0 < w <= PingObserver.timeout for w in one_ping)
        assert sum(one_ping) <= PingObserver.budget
