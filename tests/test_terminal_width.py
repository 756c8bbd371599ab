"""`status` and `history` at a real terminal (a pty of 60, 80, 120 columns): no line wider than the terminal,
and every job name and state whole."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

import pytest
from rich.cells import cell_len

from tests.conftest import Workspace, refusing_table

pytestmark = pytest.mark.backend_neutral  # what a terminal shows; the rows are the same on every database
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
JOBS = ("refresh-token-cleanup", "ip-anonymization", "email-queue", "log-cleanup", "admin-seed")


def at_terminal(ws: Workspace, columns: int, *args: str) -> list[str]:
    """The command's stdout as a terminal of `columns` columns shows it (escape sequences removed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in ws.env(TERM="xterm-256color").items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ws.path, env=env, stdin=slave,
                            stdout=slave, stderr=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            raise AssertionError("no output within 60 s")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = ANSI.sub("", b"".join(chunks).decode("utf-8"))
    return [line.rstrip("\r") for line in text.split("\n")]


@pytest.fixture
def busy(workspace: Workspace, cli) -> Workspace:
    """Every job with a history: successes, and a failure with a long error (made in this process)."""
    refusing_table(workspace.db_url, "tokens_that_refuse_to_go_with_a_long_name")
    workspace.write_config('[jobs.refresh-token-cleanup]\ntable = "tokens_that_refuse_to_go_with_a_long_name"\n'
                           '[jobs.admin-seed]\nenabled = false\n')
    for job in ("refresh-token-cleanup", "ip-anonymization", "email-queue", "log-cleanup"):
        cli(workspace, job, "--force", env={"CRONWARDEN_SMTP_PASSWORD": ""})
    return workspace


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_status_fits_the_terminal_with_whole_names_and_states(busy, columns) -> None:
    lines = at_terminal(busy, columns, "status")
    assert max(cell_len(line) for line in lines) <= columns, "\n".join(lines)
    rows = {name: line for line in lines for name in JOBS if re.search(rf"[│┃]\s*{name}\s*[│┃]", line)}
    assert set(rows) == set(JOBS), "\n".join(lines)
    assert re.search(r"[│┃]\s*failing\s*[│┃]", rows["refresh-token-cleanup"]), "\n".join(lines)
    assert re.search(r"[│┃]\s*ok\s*[│┃]", rows["log-cleanup"]), "\n".join(lines)
    assert re.search(r"[│┃]\s*disabled\s*[│┃]", rows["admin-seed"]), "\n".join(lines)


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_history_fits_the_terminal_with_whole_names_and_states(busy, columns) -> None:
    lines = at_terminal(busy, columns, "history")
    assert max(cell_len(line) for line in lines) <= columns, "\n".join(lines)
    for job, status in [("log-cleanup", "succeeded"), ("email-queue", "succeeded"),
                        ("refresh-token-cleanup", "failed")]:
        assert any(re.search(rf"[│┃]\s*{job}\s*[│┃]\s*{status}\s*[│┃]", line) for line in lines), "\n".join(lines)
    header = [c.strip() for c in re.split(r"[│┃]", next(line for line in lines if "job" in line and "status" in line))]
    if columns >= 80:
        assert {"run", "job", "status", "started", "error"} <= set(header), header


def test_a_wide_terminal_shows_every_column(busy) -> None:
    header = next(line for line in at_terminal(busy, 200, "status") if "job" in line and "state" in line)
    assert [c.strip() for c in re.split(r"[│┃]", header) if c.strip()] == [
        "job", "state", "schedule", "last status", "last run", "duration", "next due", "failures", "missed",
        "last failure", "last error"]
