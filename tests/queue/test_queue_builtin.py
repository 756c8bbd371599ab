"""The built-in one-off jobs: export-user, then erase-user as its continuation."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import MetaData, Table, insert, select

from jobs.queue import enqueue
from jobs.queue import models as qm
from jobs.queue.worker import work

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def people(engine):
    qm.create(engine)
    md = MetaData()
    users = Table("users", md, autoload_with=engine)
    tokens = Table("refresh_tokens", md, autoload_with=engine)
    with engine.begin() as conn:
        for uid, name in ((1, "ada"), (2, "bob")):
            conn.execute(insert(users).values(id=uid, username=name, email=f"{name}@example.com",
                                              password_hash="argon2-secret", is_admin=False,
                                              last_login_ip="192.0.2.7", last_login_at=NOW, created_at=NOW))
        conn.execute(insert(tokens), [
            dict(user_id=1, token_hash="hash-a1", expires_at=NOW + timedelta(days=7), created_at=NOW),
            dict(user_id=1, token_hash="hash-a2", expires_at=NOW + timedelta(days=7), created_at=NOW),
            dict(user_id=2, token_hash="hash-b1", expires_at=NOW + timedelta(days=7), created_at=NOW),
        ])
    return engine, users, tokens


def test_export_then_erase_as_a_continuation_exports_the_data_and_erases_only_that_user(people, tmp_path):
    engine, users, tokens = people
    with engine.begin() as conn:
        exported = enqueue(conn, "export-user", args={"user_id": 1, "to": str(tmp_path)})
        erased = enqueue(conn, "erase-user", args={"user_id": 1}, after=exported)
    report = work(engine)
    assert (report.succeeded, report.failed) == (2, 0)
    document = json.loads((tmp_path / "user-1.json").read_text(encoding="utf-8"))
    assert document["user"]["email"] == "ada@example.com"
    assert "password_hash" not in document["user"]
    assert len(document["refresh_tokens"]) == 2
    assert all("token_hash" not in t for t in document["refresh_tokens"])
    with engine.connect() as conn:
        ada = conn.execute(select(users).where(users.c.id == 1)).mappings().one()
        bob = conn.execute(select(users).where(users.c.id == 2)).mappings().one()
        owners = sorted(r.user_id for r in conn.execute(select(tokens.c.user_id)))
        statuses = {r.id: r.status for r in conn.execute(select(qm.queued_jobs.c.id, qm.queued_jobs.c.status))}
    assert (ada["email"], ada["username"], ada["password_hash"], ada["last_login_ip"]) == \
        ("erased-1@invalid", "erased-1", "!", None)
    assert bob["email"] == "bob@example.com"
    assert owners == [2]
    assert statuses == {exported: "succeeded", erased: "succeeded"}


def test_erase_user_twice_gives_the_same_end_state(people):
    engine, users, _ = people
    with engine.begin() as conn:
        enqueue(conn, "erase-user", args={"user_id": 2})
        enqueue(conn, "erase-user", args={"user_id": 2})
    assert work(engine).succeeded == 2
    with engine.connect() as conn:
        bob = conn.execute(select(users).where(users.c.id == 2)).mappings().one()
    assert (bob["username"], bob["email"]) == ("erased-2", "erased-2@invalid")


def test_export_of_a_missing_user_fails_for_good_and_cancels_the_erasure(people, tmp_path):
    engine, _, _ = people
    with engine.begin() as conn:
        exported = enqueue(conn, "export-user", args={"user_id": 99, "to": str(tmp_path / "exports")})
        erased = enqueue(conn, "erase-user", args={"user_id": 99}, after=exported)
    report = work(engine)
    assert report.failed == 1
    assert "no user 99" in report.errors[0]["error"]
    with engine.connect() as conn:
        assert conn.execute(select(qm.queued_jobs.c.status).where(qm.queued_jobs.c.id == erased)).scalar() \
            == "cancelled"
    assert not (tmp_path / "exports").exists()
