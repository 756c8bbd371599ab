"""Sample application data for `cronwarden demo` on the embedded SQLite database.

Everything the demo writes lives in one folder (`./cronwarden-demo/`: database, locks, outbox,
log files and the config that names them), so `rm -r cronwarden-demo` undoes it and .gitignore
covers it; the config lets any later command reach the same database with `--config`.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, insert, select

from .app_tables import create_default_tables, default_metadata

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


FOLDER = Path("cronwarden-demo")
CONFIG = FOLDER / "cronwarden.toml"
DATABASE = FOLDER / "cronwarden.db"
OUTBOX = FOLDER / "outbox"
LOGS = FOLDER / "logs"


def write_config() -> Path:
    """Create the demo folder and its config once (an operator's edits to it are kept)."""
    FOLDER.mkdir(mode=0o700, exist_ok=True)
    if not CONFIG.exists():
        CONFIG.write_text(
            "# Written by `cronwarden demo`: every file of the demo stays in this folder.\n"
            f'database_url = "sqlite:///{DATABASE.as_posix()}"\n\n'
            "[jobs.email-queue]\n"
            'transport = "file"\n'
            f'file_directory = "{OUTBOX.as_posix()}"\n\n'
            "[jobs.log-cleanup]\n"
            f'log_directory = "{LOGS.as_posix()}"\n',
            encoding="utf-8",
        )
    return CONFIG


def seed(engine: Engine, now: datetime, log_directory: Path) -> dict[str, int]:
    """Create the default tables and fill them once (a second demo reuses what is there)."""
    create_default_tables(engine)
    md = default_metadata()
    users, tokens, emails, logs = (md.tables[n] for n in ("users", "refresh_tokens", "email_queue", "logs"))
    with engine.begin() as conn:
        if conn.execute(select(func.count()).select_from(users)).scalar():
            return {}
        conn.execute(insert(users), [
            {"username": f"user{i:02d}", "email": f"user{i:02d}@example.com",
             "password_hash": hashlib.sha256(f"demo-{i}".encode()).hexdigest(), "is_admin": False,
             "last_login_ip": f"203.0.113.{i}", "last_login_at": now - timedelta(days=10 * i),
             "created_at": now - timedelta(days=400)}
            for i in range(1, 21)
        ])
        conn.execute(insert(tokens), [
            {"user_id": 1 + i % 20, "token_hash": hashlib.sha256(f"token-{i}".encode()).hexdigest(),
             "expires_at": now - timedelta(days=30) + timedelta(hours=3 * i), "created_at": now - timedelta(days=60)}
            for i in range(300)
        ])
        conn.execute(insert(emails), [
            {"to_address": f"user{i:02d}@example.com", "subject": f"Welcome, user{i:02d}",
             "body": "Thanks for signing up.\n", "status": "pending", "attempts": 0, "created_at": now}
            for i in range(1, 6)
        ])
        conn.execute(insert(logs), [
            {"level": "INFO", "message": f"request {i} served", "created_at": now - timedelta(hours=14 * i)}
            for i in range(100)
        ])
    log_directory.mkdir(parents=True, exist_ok=True)
    for day in range(0, 60, 6):
        path = log_directory / f"app-{(now - timedelta(days=day)):%Y-%m-%d}.log"
        path.write_text(f"log lines of day -{day}\n" * 50)
        stamp = (now - timedelta(days=day)).timestamp()
        os.utime(path, (stamp, stamp))
    return {"users": 20, "refresh_tokens": 300, "emails": 5, "log_rows": 100, "log_files": 10}
