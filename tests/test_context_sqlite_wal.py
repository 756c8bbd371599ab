"""On SQLite, a batch's COMMIT never carries a WAL checkpoint: JobContext checkpoints between batches
and when the run ends, so the WAL is copied back without lengthening any batch's transaction."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import text

from jobs.config import RetryPolicy
from jobs.context import SQLITE_CHECKPOINT_EVERY, JobContext
from jobs.db import make_engine
from jobs.signals import StopFlag


def _context(engine) -> JobContext:
    return JobContext(job="wal-test", run_id=1, now=datetime.now(timezone.utc), engine=engine,
                      log=logging.LoggerAdapter(logging.getLogger("wal-test"), {}), retry=RetryPolicy(),
                      stop=StopFlag(), held=None)

def _autocheckpoint(conn) -> int:
    return conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()

def _write(conn, n: int) -> int:
    conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "x" * 500} for _ in range(n)])
    return _autocheckpoint(conn)

def test_sqlite_batches_commit_without_an_automatic_checkpoint(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    ctx = _context(engine)
    seen = [ctx.in_transaction(_write, 100) for _ in range(3)]
    assert seen == [0, 0, 0]
    with engine.connect() as conn:
        assert _autocheckpoint(conn) == 1000
    engine.dispose()

def test_sqlite_wal_is_checkpointed_between_batches_and_at_the_end(tmp_path: Path):
    db = tmp_path / "wal.db"
    engine = make_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    ctx = _context(engine)
    for _ in range(SQLITE_CHECKPOINT_EVERY - 1):
        ctx.in_transaction(_write, 200)
    size_before = db.stat().st_size
    ctx.in_transaction(_write, 200)
    assert db.stat().st_size > size_before  # the checkpoint after the 4th batch copied pages into the file
    ctx.in_transaction(_write, 200)
    size_before = db.stat().st_size
    ctx.close()
    assert db.stat().st_size > size_before  # and the one at the end of the run
    engine.dispose()
