"""Bad input: malformed configurations, environment values and arguments, each refused cleanly.

Every case of CASES (wrong types, negative, zero and huge numbers, unknown keys and jobs, bad durations
and cron expressions, non-UTF-8 bytes and control characters, missing and unreadable files, URLs with
unknown drivers, patterns escaping the log folder, bad command-line values) runs against a prepared
workspace on each database, and a hypothesis-driven pass throws random values at the duration, cron
and number keys. Invariants per invocation:

- the contract's exit code (78 configuration, 2 usage, 75 for an unreachable database);
- stderr is exactly one line, which names the problem (the case's fragment), and stdout is empty;
- no traceback, and no secret marker (the database password is in every URL);
- the database (every row of every table, and on SQLite the file's bytes) and the log folder
  (names, sizes, modification times, contents) are byte-for-byte unchanged.

A NUL cannot be passed in an argument or an environment value (execve's strings end at the first NUL),
so NUL is tried inside the file. The suite runs as root, who reads a file of mode 000, so an unreadable
configuration is a folder given as the file's path, or a path under a regular file (both fail for root).
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    SECRETS,
    Budget,
    Report,
    Workspace,
    arguments,
    check_no_secrets,
    database_text,
    fork,
    fresh_database,
    preload,
    seed_from,
    selected_backends,
    spawn,
)

RTC = "refresh-token-cleanup"


@dataclass(frozen=True)
class Case:
    name: str
    config: str | bytes = ""
    env: dict[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = (RTC, "--force")
    code: int | None = 78  # None: a random value, either refused (78) or accepted (0)
    fragment: str = ""


def _job(body: str, job: str = RTC) -> str:
    return f"[jobs.{job}]\n{body}\n"


CASES: tuple[Case, ...] = (
    # unknown names
    Case("unknown job section", _job("enabled = true", "no-such-job"), fragment="no-such-job"),
    Case("unknown job key", _job("bogus = 1"), fragment="bogus"),
    Case("unknown top-level key", "bogus = 1\n", fragment="bogus"),
    Case("unknown section", "[bogus]\nx = 1\n", fragment="bogus"),
    Case("unknown [locks] key", "[locks]\nbogus = 1\n", fragment="bogus"),
    # numbers: zero, negative, huge, wrong types
    Case("retention zero", _job("retention_days = 0"), fragment="retention_days"),
    Case("retention negative", _job("retention_days = -1"), fragment="retention_days"),
    Case("retention huge", _job("retention_days = 99999999"), fragment="retention_days"),
    Case("retention beyond 64 bits", _job("retention_days = 100000000000000000000000000000"), fragment="retention_days"),
    Case("retention as a string", _job('retention_days = "7"'), fragment="retention_days"),
    Case("retention as a float", _job("retention_days = 7.5"), fragment="retention_days"),
    Case("retention as a bool", _job("retention_days = true"), fragment="retention_days"),
    Case("batch size zero", _job("batch_size = 0"), fragment="batch_size"),
    Case("batch size negative", _job("batch_size = -5"), fragment="batch_size"),
    Case("batch size as a list", _job("batch_size = [1, 2]"), fragment="batch_size"),
    Case("batch size as a table", _job("batch_size = {a = 1}"), fragment="batch_size"),
    Case("ip retention below a day", _job("retention_days = 0", "ip-anonymization"), fragment="retention_days"),
    Case("smtp port out of range", _job("smtp_port = 70000", "email-queue"), fragment="smtp_port"),
    Case("retry attempts zero", "[retry]\nattempts = 0\n", fragment="attempts"),
    # durations and schedules
    Case("interval without unit", _job('interval = "10"'), fragment="interval"),
    Case("interval unknown unit", _job('interval = "5 parsecs"'), fragment="interval"),
    Case("interval negative", _job('interval = "-1s"'), fragment="interval"),
    Case("interval exponent", _job('interval = "1e9h"'), fragment="interval"),
    Case("interval zero", _job('interval = "0s"'), fragment="interval"),
    Case("interval absurdly long", _job('interval = "99999999999999d"'), fragment="interval"),
    Case("cron minute 61", _job('cron = "61 * * * *"'), fragment="cron"),
    Case("cron three fields", _job('cron = "* * *"'), fragment="cron"),
    Case("cron unknown alias", _job('cron = "@fortnightly"'), fragment="cron"),
    Case("cron and interval", _job('cron = "0 3 * * *"\ninterval = "24h"'), fragment="interval"),
    Case("unknown time zone", _job('cron = "0 3 * * *"\ntimezone = "Mars/Olympus_Mons"'), fragment="timezone"),
    Case("retry delay unparsable", _job('retry_delays = ["60s", "soon"]'), fragment="retry_delays"),
    Case("retry delays not a list", _job('retry_delays = "60s"'), fragment="retry_delays"),
    Case("timeout forever", _job('timeout = "forever"'), fragment="timeout"),
    Case("grace negative", _job('grace = "-1h"'), fragment="grace"),
    Case("lease ttl too short", '[locks]\nlease_ttl = "1s"\n', fragment="lease_ttl"),
    Case("retry max_time negative", '[retry]\nmax_time = "-5s"\n', fragment="max_time"),
    Case("history retention zero", '[history]\nretention = "0d"\n', fragment="retention"),
    # choices, identifiers, addresses, URLs
    Case("enabled as a string", _job('enabled = "yes"'), fragment="enabled"),
    Case("unknown lock backend", '[locks]\nbackend = "redis"\n', fragment="backend"),
    Case("unknown transport", _job('transport = "pigeon"', "email-queue"), fragment="transport"),
    Case("bad from address", _job('from_address = "not an address"', "email-queue"), fragment="from_address"),
    Case("table name injection", _job('table = "refresh_tokens; DROP TABLE users"'), fragment="table"),
    Case("empty column name", _job('expires_column = ""'), fragment="expires_column"),
    Case("ping url not a url", _job('ping_url = "not a url"'), fragment="ping_url"),
    # the log folder
    Case("pattern climbing out", _job('log_file_pattern = "../*.log"', "log-cleanup"), fragment="log_file_pattern"),
    Case("pattern with a folder", _job('log_file_pattern = "sub/*.log"', "log-cleanup"), fragment="log_file_pattern"),
    Case("absolute pattern", _job('log_file_pattern = "/etc/*"', "log-cleanup"), fragment="log_file_pattern"),
    Case("pattern with a backslash", _job('log_file_pattern = "..\\\\*.log"', "log-cleanup"),
         fragment="log_file_pattern"),
    # the file itself: bytes, syntax, control characters
    Case("config not UTF-8", b"[jobs.refresh-token-cleanup]\nretention_days = 7\n# \xff\xfe caf\xe9\n",
         fragment="UTF-8"),
    Case("config UTF-16 with BOM", "retention_days = 7\n".encode("utf-16"), fragment="UTF-8"),
    Case("control character in a string", _job('table = "refresh\x01tokens"'), fragment="cronwarden.toml"),
    Case("NUL byte in the file", b"[jobs.refresh-token-cleanup]\nretention_days = 7\x00\n", fragment="cronwarden.toml"),
    Case("unclosed section", "[jobs.refresh-token-cleanup\nretention_days = 7\n", fragment="cronwarden.toml"),
    Case("duplicate key", _job("retention_days = 7\nretention_days = 8"), fragment="cronwarden.toml"),
    Case("escape sequence in a name", _job('table = "tok\\u0000ens"'), fragment="table"),
    # files and environment
    Case("config file missing", argv=("--config", "/nonexistent/cronwarden.toml", RTC, "--force"), fragment="nonexistent"),
    Case("config path is a folder", env={"CRONWARDEN_CONFIG": "/tmp"}, fragment="/tmp"),
    Case("config under a file", env={"CRONWARDEN_CONFIG": "/etc/hostname/cronwarden.toml"}, fragment="hostname"),
    Case("config path with a control character", argv=("--config", "bad\x01name.toml", RTC, "--force"),
         fragment="bad"),
    Case("database URL, unknown driver", env={"CRONWARDEN_DATABASE_URL": f"oracle://app:{SECRETS['database']}@db/app"},
         fragment="oracle"),
    Case("database URL, not a URL", env={"CRONWARDEN_DATABASE_URL": "just some words"}, fragment="database_url"),
    Case("database URL, non-UTF-8 bytes", env={"CRONWARDEN_DATABASE_URL": "sqlite:///caf\udce9.db\udcff"},
         fragment="UTF-8"),
    Case("database URL file missing", env={"CRONWARDEN_DATABASE_URL": "", "CRONWARDEN_DATABASE_URL_FILE": "/nonexistent/url"},
         fragment="CRONWARDEN_DATABASE_URL_FILE"),
    Case("database unreachable", env={"CRONWARDEN_DATABASE_URL":
                                      f"postgresql://app:{SECRETS['database']}@127.0.0.1:9/app"},
         argv=("--quiet", RTC, "--force"), config="[retry]\nattempts = 2\nmax_time = \"2s\"\n", code=75,
         fragment="database"),
    Case("admin password too short", env={"CRONWARDEN_ADMIN_PASSWORD": "short"}, argv=("admin-seed", "--force"),
         fragment="password"),
    Case("admin password file missing", env={"CRONWARDEN_ADMIN_PASSWORD_FILE": "/nonexistent/pw"},
         argv=("admin-seed", "--force"), fragment="CRONWARDEN_ADMIN_PASSWORD_FILE"),
    Case("smtp password file missing", env={"CRONWARDEN_SMTP_PASSWORD_FILE": "/nonexistent/pw"},
         argv=("email-queue", "--force"), fragment="CRONWARDEN_SMTP_PASSWORD_FILE"),
    # the command line
    Case("option zero", argv=(RTC, "--retention-days", "0"), code=2, fragment="--retention-days"),
    Case("option negative", argv=(RTC, "--batch-size", "-3"), code=2, fragment="--batch-size"),
    Case("option not a number", argv=(RTC, "--retention-days", "abc"), code=2, fragment="--retention-days"),
    Case("option huge", argv=(RTC, "--retention-days", "9" * 40), code=2, fragment="--retention-days"),
    Case("option non-UTF-8", argv=(RTC, "--retention-days", "\udcff\udcfe"), code=2, fragment="--retention-days"),
    Case("option control character", argv=(RTC, "--retention-days", "7\x1b[31m"), code=2,
         fragment="--retention-days"),
    Case("unknown option", argv=(RTC, "--bogus"), code=2, fragment="--bogus"),
    Case("unknown command", argv=("no-such-command",), code=2, fragment="no-such-command"),
    Case("bad log format", argv=("--log-format", "xml", RTC), code=2, fragment="--log-format"),
    Case("history limit zero", argv=("history", "--limit", "0"), code=2, fragment="--limit"),
    Case("enqueue, argument of the wrong type", argv=("enqueue", "erase-user", "--arg", "user_id=abc"), code=2,
         fragment="user_id"),
    Case("enqueue, unknown job", argv=("enqueue", "no-such-task"), code=2, fragment="no-such-task"),
    Case("enqueue, bad delay", argv=("enqueue", "erase-user", "--arg", "user_id=1", "--delay", "soon"), code=2,
         fragment="--delay"),
)


def snapshot(ws: Workspace) -> tuple[str, str]:
    """(the database's rows and, on SQLite, file bytes; the log folder) as comparable digests."""
    rows = database_text(ws.db_url)
    if ws.db_url.startswith("sqlite"):
        db = Path(ws.db_url.split("///", 1)[1])
        for path in (db, db.with_name(db.name + "-wal")):
            rows += f"\n{path.name}: " + (hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "-")
    logs = ws.path / "logs"
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
                   for p in logs.iterdir())
    return hashlib.sha256(rows.encode("utf-8", "surrogateescape")).hexdigest(), repr(files)


def prepare(folder: Path, url: str) -> Workspace:
    ws = Workspace(folder, url).prepare("")
    logs = folder / "logs"
    logs.mkdir()
    for i in range(5):
        path = logs / f"app{i}.log"
        path.write_text(f"line {i}\n")
        os.utime(path, (1_600_000_000 + i, 1_600_000_000 + i))  # long past any retention
    from _common import checker_engine
    from sqlalchemy import text

    eng = checker_engine(url)
    with eng.begin() as conn:
        conn.execute(text("INSERT INTO refresh_tokens (user_id, token_hash, expires_at, created_at) "
                          "VALUES (1, 'old', '2000-01-01 00:00:00', '2000-01-01 00:00:00')"))
    eng.dispose()
    return ws


def run_case(ws: Workspace, case: Case, ledger, real_process: bool) -> None:
    if isinstance(case.config, bytes):
        ws.config_file.write_bytes(case.config)
    else:
        ws.write_config(case.config + '\n[jobs.log-cleanup]\nlog_directory = "logs"\n'
                        if "log-cleanup" not in case.config else case.config)
    before = snapshot(ws)
    env = ws.env(**case.env)
    inv = (spawn if real_process else fork)(ws, *case.argv, env=env)
    code = inv.wait(timeout=120)
    err_lines = [line for line in inv.stderr.splitlines() if line.strip()]
    what = f"{case.name}: exit {code}, stderr {inv.stderr[-400:]!r}"
    if case.code is None and code == 0:  # a random value the grammar accepts: it ran, cleanly
        ledger.fault("random value, accepted")
        ledger.check("Traceback" not in inv.stderr, f"{case.name}: a traceback")
        check_no_secrets(ledger, inv.stdout + inv.stderr, f"the output of case {case.name!r}")
        return
    expected = 78 if case.code is None else case.code
    ledger.check(code == expected, f"{what} (expected exit {expected})")
    ledger.check(len(err_lines) == 1, f"{what}: not exactly one line")
    ledger.check(case.fragment.lower() in inv.stderr.lower(), f"{what}: does not name {case.fragment!r}")
    ledger.check(inv.stdout == "", f"{case.name}: printed on stdout: {inv.stdout[:200]!r}")
    ledger.check("Traceback" not in inv.stderr, f"{case.name}: a traceback")
    check_no_secrets(ledger, inv.stdout + inv.stderr, f"the output of case {case.name!r}")
    after = snapshot(ws)
    ledger.check(after[0] == before[0], f"{case.name}: the database changed")
    ledger.check(after[1] == before[1], f"{case.name}: the log folder changed")
    ledger.fault("random value, refused" if case.code is None else "configuration file" if case.config
                 else "environment" if case.env else "command line")


def fuzz_case(rng: random.Random) -> Case:
    """A random bad value for a duration, cron or number key (the hypothesis-style pass through the CLI)."""
    junk = ["", " ", "-", "1", "1.5", "1e3", "nan", "inf", "-0", "0x10", "１０s", "10 s", "10ss", "s10",
            "10s10", "∞", "\t", "1h-1m", "*/0 * * * *", "* * * * * *", "60 24 * * *", "0 0 32 13 *", "@every"]
    key, fragment = rng.choice([("interval", "interval"), ("cron", "cron"), ("timeout", "timeout"),
                                ("grace", "grace"), ("retention_days", "retention_days")])
    value = rng.choice(junk) + rng.choice(["", "", "x", "\u200b", "d" * rng.randint(1, 3)])
    if key == "retention_days" and rng.random() < 0.5:
        number = rng.choice(["0", "-7", "1e3", '"7"', "nan", "9" * 25])
        return Case(f"fuzz {key}={number}", _job(f"{key} = {number}"), code=None, fragment=fragment)
    toml_value = value.replace("\\", "\\\\").replace('"', '\\"')
    return Case(f"fuzz {key}={value!r}", _job(f'{key} = "{toml_value}"'), code=None, fragment=fragment)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__.splitlines()[0], rounds=200, seconds=1800)
    args = parser.parse_args(argv)
    rng = random.Random(seed_from(args))
    report = Report("bad_input", f"Bad input: {len(CASES)} malformed configurations, environment values and "
                                 "arguments, plus random values")
    preload()
    databases = selected_backends(args, report)
    budget = Budget(len(databases) * 2, args.max_seconds)
    for database in databases:
        with report.scenario(f"table of {len(CASES)} cases", database) as ledger, \
                tempfile.TemporaryDirectory(prefix="cw-bad-") as tmp, fresh_database(database, Path(tmp)) as url:
            ws = prepare(Path(tmp) / "ws", url)
            for i, case in enumerate(CASES):
                run_case(ws, case, ledger, real_process=i % 10 == 0)
                ledger.rounds = i + 1
        fuzz = Budget(args.rounds, budget.split(len(databases)))
        with report.scenario("random bad values", database, fuzz) as ledger, \
                tempfile.TemporaryDirectory(prefix="cw-bad-") as tmp, fresh_database(database, Path(tmp)) as url:
            ws = prepare(Path(tmp) / "ws", url)
            for _ in fuzz:
                case = fuzz_case(rng)
                if case.fragment == "cron" and "interval" in case.config:
                    continue
                run_case(ws, case, ledger, real_process=False)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
