"""The quick path (cli/front.py, jobs/tick.py) decides a tick exactly as the full CLI does.

Every state runs twice, in two identical workspaces: through the console script's front in a process of
its own (quick path allowed), and through the full CLI alone (cli/app.py, in this process: what the
front hands over to). Exit code, stdout, stderr (modulo timestamps, durations, ids and the workspace's
own names) and the tracking and history rows must agree. The front's process also reports whether
SQLAlchemy was imported, so the states the quick path must decide are seen to be decided there, and the
others to be handed over.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.conftest import Result, Workspace, _standard_tables

JOB = "refresh-token-cleanup"
FRONT = ("import os, sys\nfrom cli.front import main\ncode = main(sys.argv[1:])\n"
         "heavy = [m for m in ('sqlalchemy', 'typer', 'click', 'pydantic', 'rich', 'psycopg', 'pymysql')\n"
         "         if m in sys.modules]\n"
         "open(os.environ['QUICK_MARK'], 'w').write(','.join(heavy))\n"
         "raise SystemExit(code)\n")
SERVER = {"postgres": "pg_database", "mariadb": "mysql_database"}
HEAVY = {"sqlalchemy", "typer", "click", "pydantic", "rich"}
FRAMEWORK = {"typer", "click", "pydantic", "rich"}  # what a line the front runs itself never imports
DRIVER = {"sqlite": set(), "postgres": {"psycopg"}, "mariadb": {"pymysql"}}
# state -> (databases where it applies, decided by the quick path?)
STATES = {
    "never_run": (("sqlite", "postgres", "mariadb"), False),
    "due": (("sqlite", "postgres", "mariadb"), False),
    "not_due": (("sqlite", "postgres", "mariadb"), True),
    "not_due_jitter": (("sqlite", "postgres", "mariadb"), True),
    "paused": (("sqlite", "postgres", "mariadb"), True),
    "disabled": (("sqlite", "postgres", "mariadb"), True),
    "backoff": (("sqlite", "postgres", "mariadb"), True),
    "locked": (("sqlite", "postgres", "mariadb"), True),
    "locked_lease": (("sqlite", "postgres", "mariadb"), False),
    "buffer_locked": (("sqlite", "postgres", "mariadb"), False),  # overlap = "buffer_one": the owed run is written
    "buffer_owed_locked": (("sqlite", "postgres", "mariadb"), True),  # a run already owed: nothing to write
    "owed": (("sqlite", "postgres", "mariadb"), False),  # owed_run_at set, schedule not due: not "not due"
    "owed_paused": (("sqlite", "postgres", "mariadb"), True),
    "abandoned": (("sqlite", "postgres", "mariadb"), False),
    "bad_config": (("sqlite", "postgres", "mariadb"), False),
    "unknown_job": (("sqlite", "postgres", "mariadb"), False),
    "database_down": (("postgres", "mariadb"), False),
    "tables_missing": (("sqlite", "postgres", "mariadb"), False),
    "older_schema": (("sqlite", "postgres", "mariadb"), False),
    # catch_up = "none" after downtime: the first tick records the slots it skips (a write: handed over),
    # later ticks find the job not due until its next slot
    "missed_none": (("sqlite", "postgres", "mariadb"), False),
    "missed_none_recorded": (("sqlite", "postgres", "mariadb"), True),
}
MISSED = ("missed_none", "missed_none_recorded")
BUFFERED = ("buffer_locked", "buffer_owed_locked", "owed", "owed_paused")
LOCKED = ("locked", "locked_lease", "buffer_locked", "buffer_owed_locked")
CASES = [(state, db) for state, (dbs, _) in STATES.items() for db in dbs]


def _engine(url: str):
    from jobs.db import make_engine

    return make_engine(url)


def _prepare(ws: Workspace, state: str, db: str, cli, run_due: bool = False) -> None:
    """Put one workspace in the state (the same steps for both workspaces of a case), with the full CLI in
    this process."""
    from sqlalchemy import update

    from jobs.models import executions

    config = '[retry]\nattempts = 2\nmax_time = "1s"\n'
    if run_due:  # two recurring jobs: refresh-token-cleanup in the state, log-cleanup not due
        config += "[jobs.email-queue]\nenabled = false\n[jobs.ip-anonymization]\nenabled = false\n"
    if state == "disabled":
        config += f"[jobs.{JOB}]\nenabled = false\n"
    if state == "not_due_jitter":  # a not-due tick decides before any jitter, on both paths
        config += f'[jobs.{JOB}]\njitter = "23h"\n'
    if state == "bad_config":
        config += f"[jobs.{JOB}]\nbatch_size = 0\n"
    if state == "locked_lease":
        config += '[locks]\nbackend = "lease"\n'
    if state in MISSED:
        config += f'[jobs.{JOB}]\ninterval = "1h"\ncatch_up = "none"\ncatch_up_window = "10m"\n'
    if state in BUFFERED:
        config += f'[jobs.{JOB}]\noverlap = "buffer_one"\n'
    ws.write_config(config)
    if state == "database_down":
        ws.db_url = ws.db_url.replace("127.0.0.1:5432", "127.0.0.1:9").replace("127.0.0.1:3306", "127.0.0.1:9")
        return
    if state == "tables_missing":
        return
    eng = _engine(ws.db_url)
    if db == "sqlite":  # a server's database is given with these tables (ServerDatabase.standard)
        _standard_tables(ws.db_url)
    now = datetime.now(timezone.utc)
    if run_due:
        assert cli(ws, "log-cleanup").exit_code == 0
    if state in ("not_due", "due", "backoff", "paused", "older_schema", *MISSED, "buffer_owed_locked", "owed",
                 "owed_paused"):
        assert cli(ws, JOB).exit_code == 0
    if state == "not_due_jitter":  # forced: a scheduled first run would wait its jitter
        assert cli(ws, JOB, "--force").exit_code == 0
    if state in ("paused", "owed_paused"):
        assert cli(ws, "pause", JOB).exit_code == 0
    with eng.begin() as conn:
        if state == "older_schema":
            from jobs.models import schema_version

            conn.execute(update(schema_version).values(version=2))
        if state == "due":
            conn.execute(update(executions).values(schedule_slot_at=now - timedelta(days=3)))
        if state in MISSED:  # the latest slot of the hourly grid is 30 minutes old, past the 10m window
            then = now - timedelta(days=3, minutes=30)
            conn.execute(update(executions).values(schedule_slot_at=then, last_executed_at=then))
        if state in ("buffer_owed_locked", "owed", "owed_paused"):
            conn.execute(update(executions).where(executions.c.job_name == JOB)
                         .values(owed_run_at=now - timedelta(minutes=1)))
        if state == "backoff":
            conn.execute(update(executions).values(schedule_slot_at=now - timedelta(days=3), consecutive_failures=1,
                                                   next_retry_at=now + timedelta(hours=1)))
    if state == "missed_none_recorded":
        assert cli(ws, JOB).exit_code == 0
    if state == "abandoned":
        from jobs import config as config_mod
        from jobs import tracking
        from jobs.outcome import Trigger
        from jobs.registry import builtin_specs

        job = config_mod.load({}, builtin_specs(), database_url=ws.db_url).job(JOB)
        tracking.start_run(eng, job, Trigger.SCHEDULED, now - timedelta(minutes=5), "elsewhere", 1)
    eng.dispose()


def _hold_lock(ws: Workspace, state: str):
    """Another process's lock, as the job's own backend takes it (this test process stands in for it)."""
    if state not in LOCKED:
        return None
    from jobs import config as config_mod
    from jobs.locks import backend_for
    from jobs.registry import builtin_specs

    env = ws.env()
    raw = config_mod.read_toml(ws.config_file)
    cfg = config_mod.load(raw, builtin_specs(), environ=env, database_url=ws.db_url)
    eng = _engine(ws.db_url)
    held = backend_for(cfg, eng).try_acquire(JOB, timedelta(minutes=5))
    assert held is not None
    return held, eng


def _rows(ws: Workspace, state: str) -> object:
    if state in ("database_down", "tables_missing"):
        return sorted(p.name for p in ws.path.iterdir() if p.name != "mark")  # nothing created but the config
    from sqlalchemy import select

    from jobs.models import executions, runs

    eng = _engine(ws.db_url)
    try:
        with eng.connect() as conn:
            found = [dict(r) for r in conn.execute(select(executions)).mappings()]
            found += [dict(r) for r in conn.execute(select(runs).order_by(runs.c.id)).mappings()]
    finally:
        eng.dispose()
    return [{k: (v is not None if isinstance(v, datetime) or k in ("last_duration_seconds", "duration_seconds")
                 else (v.rsplit(":", 1)[0] if k in ("last_executed_by", "paused_by") and v else v))
             for k, v in row.items() if k != "pid"} for row in found]


def _normal(text: str, ws: Workspace) -> str:
    text = text.replace(str(ws.path), "WS")
    text = re.sub(r"cw_[A-Za-z0-9]+_[0-9a-f]{8}", "cw_DB", text)
    text = re.sub(r"\d{4}-\d\d-\d\d[T ][0-9:.]+(\+00:00|Z)?", "TIME", text)
    text = re.sub(r"\b\d+\.\d+s?\b", "N", text)
    return re.sub(r"(pid=|run=|\"run_id\": )\d+", r"\1ID", text)


def _invoke(ws: Workspace, args: tuple[str, ...], quick: bool, mark: Path, **extra: str) -> tuple:
    """The console script's front in a process of its own (CRONWARDEN_QUICK_PATH=off when not quick)."""
    env = ws.env(QUICK_MARK=str(mark), **extra)
    if not quick:
        env["CRONWARDEN_QUICK_PATH"] = "off"
    proc = subprocess.run([sys.executable, "-c", FRONT, *args], cwd=ws.path, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, _normal(proc.stdout, ws), _normal(proc.stderr, ws)


def _full(ws: Workspace, args: tuple[str, ...], cli, **extra: str) -> tuple:
    """The full CLI alone, in this process: what the front hands over to."""
    result: Result = cli(ws, *args, env=extra)
    return result.exit_code, _normal(result.stdout, ws), _normal(result.stderr, ws)


def _workspace(tmp_path: Path, quick: bool, db: str, state: str, request: pytest.FixtureRequest) -> Workspace:
    """A workspace of its own for each path; on a server, this test process's database as a state needs it:
    with the tool's and the default tables (truncated when the last test left the same structure), empty
    for `tables_missing`, untouched when the server is to be unreachable."""
    where = tmp_path / ("quick" if quick else "full")
    where.mkdir()
    if db == "sqlite":
        return Workspace(where, f"sqlite:///{where / 'cronwarden.db'}")
    database = request.getfixturevalue(SERVER[db])
    if state == "tables_missing":
        database.empty()
    elif state != "database_down":
        database.standard(_standard_tables)
    return Workspace(where, database.url)


@pytest.mark.parametrize(("state", "db"), CASES, ids=[f"{s}-{d}" for s, d in CASES])
def test_quick_path_decides_as_the_full_cli(state: str, db: str, tmp_path: Path, request: pytest.FixtureRequest,
                                            cli) -> None:
    args = ("no-such-job",) if state == "unknown_job" else (JOB, "--json")
    _compare(state, db, args, tmp_path, request, cli)


RUN_DUE = [(state, db) for state in ("not_due", "paused", "locked", "due", "buffer_locked",
                                                 "buffer_owed_locked") for db in ("sqlite", "postgres", "mariadb")]


@pytest.mark.parametrize(("state", "db"), RUN_DUE, ids=[f"{s}-{d}" for s, d in RUN_DUE])
def test_quick_run_due_decides_as_the_full_cli(state: str, db: str, tmp_path: Path,
                                               request: pytest.FixtureRequest, cli) -> None:
    """run-due with refresh-token-cleanup in the state and log-cleanup not due: one report per job."""
    _compare(state, db, ("run-due", "--json"), tmp_path, request, cli, run_due=True)


def _compare(state: str, db: str, args: tuple[str, ...], tmp_path: Path, request: pytest.FixtureRequest, cli,
             run_due: bool = False) -> None:
    """The two paths one after the other, each on a database of its own state."""
    outcomes, rows = [], []
    for quick in (True, False):
        ws = _workspace(tmp_path, quick, db, state, request)
        _prepare(ws, state, db, cli, run_due)
        held = _hold_lock(ws, state)
        try:
            outcomes.append(_invoke(ws, args, quick, ws.path / "mark") if quick else _full(ws, args, cli))
        finally:
            if held is not None:
                held[0].release()
                held[1].dispose()
        rows.append(_rows(ws, state))
    assert outcomes[0] == outcomes[1]
    assert rows[0] == rows[1]
    if state in MISSED:  # the hourly slots of three days and a half hour, skipped once
        assert rows[0][0]["missed_slots"] == 72 and '"status": "not_due"' in outcomes[0][1], (rows[0], outcomes[0])
    mark = (tmp_path / "quick" / "mark").read_text()
    loaded = set(filter(None, mark.split(",")))
    assert (not loaded & HEAVY) is STATES[state][1], mark
    assert (not loaded & FRAMEWORK) is (state != "unknown_job"), mark  # a run, an error: the front's own
    if STATES[state][1]:  # the import test: the driver of this database at most
        assert loaded <= DRIVER[db], mark


# Lines the front runs itself (cli/actions.py) when there is work: (id, arguments, workspace state). METRICS
# stands for a metrics file in the workspace.
DIRECT = [
    ("forced-json", (JOB, "--force", "--json"), "due"),
    ("scheduled-text", (JOB,), "due"),
    ("dry-run", (JOB, "--dry-run"), "due"),
    ("json-logs", ("--log-format", "json", JOB, "--force"), "due"),
    ("verbose-quiet", ("-v", JOB, "--quiet"), "due"),
    ("metrics-file", (JOB, "--metrics-file", "METRICS", "--json"), "due"),
    ("run-due-text", ("run-due",), "due"),
    ("work-json", ("work", "--json"), "queued"),
    ("work-text", ("--log-format=json", "work", "--max-jobs", "3", "--batch-size=2"), "queued"),
    ("work-quiet", ("work", "-q", "--max-seconds", "20.5"), "queued"),
]
DIRECT_CASES = [(name, db) for name, _, _ in DIRECT for db in ("sqlite", "postgres", "mariadb")]


@pytest.mark.parametrize(("name", "db"), DIRECT_CASES, ids=[f"{n}-{d}" for n, d in DIRECT_CASES])
def test_a_line_the_front_runs_prints_and_records_as_the_full_cli(name: str, db: str, tmp_path: Path,
                                                                  request: pytest.FixtureRequest, cli) -> None:
    """A run, a dry run, run-due and work, each twice in identical workspaces: through the front without the
    CLI framework, and the full CLI alone. Exit code, stdout, stderr (text and JSON log lines, error lines),
    tracking, history and queue rows and the metrics file agree."""
    args, state = next((a, s) for n, a, s in DIRECT if n == name)
    outcomes, rows, metrics = [], [], []
    for quick in (True, False):
        ws = _workspace(tmp_path, quick, db, state, request)
        where = ws.path
        _prepare(ws, "never_run" if state == "queued" else state, db, cli)
        env = {}
        if state == "queued":
            env["CRONWARDEN_TASK_MODULES"] = "tests.queue.tasks"
            _queue(ws)
        line = tuple(str(where / "metrics.prom") if arg == "METRICS" else arg for arg in args)
        code, out, err = _invoke(ws, line, quick, where / "mark", **env) if quick else _full(ws, line, cli, **env)
        # a retried bookkeeping statement (on MariaDB a claim and the outcome recorder can deadlock) is timing,
        # not behaviour: its line may appear on either path
        outcomes.append((code, out, re.sub(r'.*(cronwarden\.retry|retrying).*\n', "", err)))
        rows.append((_rows(ws, state), _queue_rows(ws) if state == "queued" else None))
        prom = where / "metrics.prom"
        metrics.append(re.sub(r" \S+$", " N", prom.read_text(), flags=re.M) if prom.exists() else None)
    assert outcomes[0] == outcomes[1]
    assert rows[0] == rows[1]
    assert metrics[0] == metrics[1]
    mark = set(filter(None, (tmp_path / "quick" / "mark").read_text().split(",")))
    assert not mark & FRAMEWORK, mark
    if name.startswith("work"):
        assert outcomes[0][0] == 1 and "refused for good" in outcomes[0][1] + outcomes[0][2], outcomes[0]
    if name == "metrics-file":
        assert "cronwarden_job_last_success_timestamp_seconds" in (metrics[0] or ""), metrics[0]


def _queue(ws: Workspace) -> None:
    """Three tasks for `work`: one succeeds, one fails once and is retried later, one fails for good."""
    from jobs.queue import enqueue
    from tests.queue.tasks import RECORD, create_side_table

    eng = _engine(ws.db_url)
    try:
        create_side_table(eng)
        with eng.begin() as conn:
            enqueue(conn, RECORD, args={"tag": "fine"})
            enqueue(conn, RECORD, args={"tag": "flaky", "fail_times": 1})
            enqueue(conn, RECORD, args={"tag": "refused", "permanent": True})
    finally:
        eng.dispose()


def _queue_rows(ws: Workspace) -> list:
    from sqlalchemy import select

    from jobs.queue.models import queued_jobs

    eng = _engine(ws.db_url)
    try:
        with eng.connect() as conn:
            return [tuple(r) for r in conn.execute(select(queued_jobs.c.job_name, queued_jobs.c.status,
                                                          queued_jobs.c.attempts, queued_jobs.c.last_error)
                                                   .order_by(queued_jobs.c.id))]
    finally:
        eng.dispose()


@pytest.mark.parametrize("line", [("work", "--max-jobs", "0"), ("work", "--max-seconds", "1e3"),
                                  ("work", "--batch-size", "1001"), ("work", "--force"), ("run-due", "--dry-run"),
                                  (JOB, "--max-jobs", "3"), (JOB, "--batch-size", "5"), (JOB, "--for", "1m"),
                                  ("--log-format", "xml", JOB), (JOB, "--help"), ("work", "--max-seconds", "-1")])
def test_a_line_the_front_does_not_fully_understand_is_the_full_clis(line: tuple[str, ...]) -> None:
    """Bounds, settings, other options and help are the option parser's to check and explain."""
    from cli.front import _parse

    assert _parse(list(line)) is None


def test_the_front_reads_work_options_as_the_typer_command_bounds_them() -> None:
    from cli.front import _parse

    line = _parse(["--quiet", "work", "--max-jobs=7", "--max-seconds", "0.5", "--batch-size", "1000", "--json"])
    assert line is not None
    assert (line["job"], line["quiet"], line["json"], line["max_jobs"], line["max_seconds"], line["batch_size"]) == \
        ("work", True, True, 7, 0.5, 1000)


@pytest.mark.parametrize("command", [JOB, "run-due"])
def test_a_for_line_is_handed_to_the_full_cli(command: str, sqlite_workspace: Workspace, tmp_path: Path) -> None:
    """`--for` keeps ticking: even a not-due tick is the full CLI's, which sleeps until the next slot."""
    ws = sqlite_workspace
    assert ws.run(JOB, env=ws.env(CRONWARDEN_QUICK_PATH="off")).returncode == 0
    code, out, _ = _invoke(ws, (command, "--for", "100ms", "--json"), True, tmp_path / "mark")
    assert code == 0
    assert "typer" in (tmp_path / "mark").read_text(), "the quick path decided a --for line"
    assert out.count("\n") == 1 and "not_due" in out


def test_a_not_due_tick_imports_no_typing_logging_json_or_job_runtime(sqlite_workspace: Workspace) -> None:
    """What the front, config and built-ins import for a not-due tick with no config file: the standard
    library's typing, logging and json, the job context and the batch helpers load only when used."""
    ws = sqlite_workspace
    ws.config_file.unlink()
    env = {k: v for k, v in ws.env().items() if k != "CRONWARDEN_CONFIG"}
    subprocess.run([sys.executable, "-m", "cli", JOB], cwd=ws.path, env=env, check=True, capture_output=True)
    probe = ("import sys\nfrom cli.front import main\ncode = main(sys.argv[1:])\n"
             "print(code, ','.join(m for m in ('sqlalchemy', 'typing', 'logging', 'json', 'threading', 'socket',\n"
             "                                 'jobs.context', 'jobs.batches', 'jobs.execution',\n"
             "                                 'jobs.builtin.email_rows') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe, JOB], cwd=ws.path, env=env, check=True,
                         capture_output=True, text=True)
    assert (out.stdout, out.stderr) == ("0 \n", "")


def test_locked_tick_logs_the_same_json_line(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    """--log-format json and --quiet after the job name: the lock line is the runner's, in JSON."""
    ws = sqlite_workspace
    held = _hold_lock(ws, "locked")
    try:
        quick = _invoke(ws, (JOB, "--log-format", "json"), True, tmp_path / "mark")
        assert (tmp_path / "mark").read_text() == ""  # nothing heavy, no server driver
        full = _invoke(ws, (JOB, "--log-format", "json"), False, tmp_path / "mark2")
        quiet = _invoke(ws, (JOB, "-q"), True, tmp_path / "mark3")
    finally:
        held[0].release()
        held[1].dispose()
    assert quick == full
    assert "typer" in (tmp_path / "mark2").read_text(), "CRONWARDEN_QUICK_PATH=off did not reach the full CLI"
    line = json.loads(quick[2])
    assert (line["level"], line["job"], line["event"]) == ("info", JOB,
                                                           "skipped: another process holds the lock")
    assert quiet == (0, "", "")


def test_quick_column_list_matches_the_tracking_table() -> None:
    from jobs.due import EXECUTION_COLUMNS
    from jobs.models import executions

    assert tuple(c.name for c in executions.columns) == EXECUTION_COLUMNS


@pytest.mark.parametrize("url", ["sqlite:///cronwarden.db", "sqlite:////var/lib/cw/x.db",
                                 "postgresql://postgres@127.0.0.1:5432/test", "postgres://u:p%40ss@db/app",
                                 "postgresql+psycopg://u@h/d", "mysql://root:pw@127.0.0.1/test",
                                 "mariadb://root@localhost:3307/x", "mysql+pymysql://a:b@c:1/d"])
def test_plain_urls_parse_as_sqlalchemy_parses_them(url: str) -> None:
    from sqlalchemy.engine import make_url

    from jobs.db import dialect_of, normalize
    from jobs.dburl import parse

    plain, full = parse(url), make_url(normalize(url))
    assert (plain.dialect, plain.database, plain.host or None, plain.port, plain.user, plain.password) == \
        (dialect_of(url), full.database, full.host, full.port, full.username, full.password)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "postgresql:///db", "mysql://h/d?charset=x",
                                 "postgresql://[::1]/d", "oracle://h/d", "postgresql://h:x/d", "postgresql://h"])
def test_other_urls_are_handed_over(url: str) -> None:
    from jobs.dburl import NotPlain, parse

    with pytest.raises(NotPlain):
        parse(url)


def test_builtin_specs_load_without_sqlalchemy() -> None:
    code = "import sys\nfrom jobs.registry import builtin_specs\nbuiltin_specs()\nprint('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert out.stdout.strip() == "False"
