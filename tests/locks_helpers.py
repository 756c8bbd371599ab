"""Building a lock backend for a (database, backend) pair, shared by the lock tests."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

PAIRS = [
    ("sqlite", "file"),
    ("sqlite", "lease"),
    ("postgres", "postgres"),
    ("postgres", "lease"),
    ("mariadb", "mysql"),
    ("mariadb", "lease"),
]
URL_FIXTURE = {"sqlite": "sqlite_url", "postgres": "pg_url", "mariadb": "mysql_url"}


def pair_id(pair: tuple[str, str]) -> str:
    return f"{pair[1]}-on-{pair[0]}"


def config_text(backend: str, ttl: str = "3s") -> str:
    return f'[locks]\nbackend = "{backend}"\nlease_ttl = "{ttl}"\n'


def url_for(request: pytest.FixtureRequest, database: str) -> str:
    return request.getfixturevalue(URL_FIXTURE[database])


def build_backend(url: str, backend: str, lock_dir: Path, ttl: str = "3s"):
    from jobs import config as config_mod
    from jobs.db import make_engine
    from jobs.locks import backend_for
    from jobs.registry import builtin_specs
    from jobs.schema import upgrade

    cfg = config_mod.load(tomllib.loads(config_text(backend, ttl)), builtin_specs(),
                          environ={"CRONWARDEN_LOCK_DIR": str(lock_dir)}, database_url=url)
    engine = make_engine(url)
    upgrade(engine)
    return backend_for(cfg, engine), engine


def can_take_now(ws, job: str) -> bool:
    """Whether this test process, standing in for a second process, can take the job's lock at once, as the
    workspace's CLI would (its config's [locks] and lock folder; [jobs.*] tables of plugin jobs are left out,
    they do not choose the lock); a lock taken is released right away."""
    from datetime import timedelta

    from jobs import config as config_mod
    from jobs.db import make_engine
    from jobs.locks import backend_for
    from jobs.registry import builtin_specs

    raw = config_mod.read_toml(ws.config_file)
    known = {spec.name for spec in builtin_specs()}
    raw["jobs"] = {name: table for name, table in raw.get("jobs", {}).items() if name in known}
    cfg = config_mod.load(raw, builtin_specs(), environ=ws.env(), database_url=ws.db_url)
    eng = make_engine(ws.db_url)
    try:
        held = backend_for(cfg, eng).try_acquire(job, timedelta(minutes=1))
        if held is not None:
            held.release()
        return held is not None
    finally:
        eng.dispose()
