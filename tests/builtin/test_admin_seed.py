"""admin-seed: one administrator, created once, never modified; the password stays secret and is required."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pytest
import time_machine
from sqlalchemy import insert, select, text

from jobs.app_tables import default_metadata
from jobs.models import executions, runs

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
users = default_metadata().tables["users"]


def _password() -> str:
    """A unique marker, so any leak of it is found by plain text search."""
    return f"pw-marker-{uuid.uuid4().hex}"


def _seed(cli, ws, *args: str, password: str | None, code: int = 0, before: tuple[str, ...] = (),
          **env: str):
    if password is not None:
        env["CRONWARDEN_ADMIN_PASSWORD"] = password
    with time_machine.travel(NOW, tick=False):
        result = cli(ws, *before, "admin-seed", "--force", "--json", *args, env=env)
    assert result.exit_code == code, result.stderr
    return result


def _users(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(users).order_by(users.c.id)).mappings()]


def _verify(password_hash: str, password: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import VerifyMismatchError

    try:
        return PasswordHasher().verify(password_hash, password)
    except VerifyMismatchError:
        return False


def test_creates_the_administrator_once_with_an_argon2_hash_of_the_password(workspace, engine, cli):
    password = _password()
    report = json.loads(_seed(cli, workspace, password=password).stdout)
    assert report["counts"] == {"created": 1}
    [admin] = _users(engine)
    assert (admin["username"], admin["email"], bool(admin["is_admin"])) == ("admin", "admin@example.com", True)
    assert admin["created_at"] == NOW
    assert admin["password_hash"].startswith("$argon2id$") and admin["password_hash"] != password
    assert _verify(admin["password_hash"], password) and not _verify(admin["password_hash"], password + "x")


def test_a_second_run_creates_nothing_and_leaves_the_administrator_as_it_was(workspace, engine, cli):
    _seed(cli, workspace, password=_password())
    first = _users(engine)
    report = json.loads(_seed(cli, workspace, password=_password()).stdout)
    assert report["counts"] == {"created": 0}
    assert report["details"] == ["an administrator already exists (username 'admin'): nothing created"]
    assert _users(engine) == first


def test_an_existing_administrator_under_another_name_is_never_modified(workspace, engine, cli):
    with engine.begin() as conn:
        conn.execute(insert(users).values(username="root", email="root@example.org", password_hash="kept",
                                          is_admin=True, created_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
    before = _users(engine)
    workspace.write_config('[jobs.admin-seed]\nusername = "boss"\nemail = "boss@example.org"\n')
    assert json.loads(_seed(cli, workspace, password=_password()).stdout)["counts"] == {"created": 0}
    assert _users(engine) == before


def test_a_regular_user_holding_the_username_is_not_promoted_and_the_run_fails(workspace, engine, cli):
    with engine.begin() as conn:
        conn.execute(insert(users).values(username="admin", email="someone@example.org", password_hash="theirs",
                                          is_admin=False, created_at=NOW))
    before = _users(engine)
    result = _seed(cli, workspace, password=_password(), code=1)
    assert "not an administrator" in json.loads(result.stdout)["error"]
    assert _users(engine) == before


def test_dry_run_says_whether_it_would_create_and_changes_nothing(workspace, engine, cli):
    report = json.loads(_seed(cli, workspace, "--dry-run", password=_password()).stdout)
    assert report["status"] == "dry_run" and report["counts"] == {"created": 1}
    assert report["details"] == ["would create the administrator 'admin' <admin@example.com>"]
    assert _users(engine) == []
    _seed(cli, workspace, password=_password())
    report = json.loads(_seed(cli, workspace, "--dry-run", password=_password()).stdout)
    assert report["counts"] == {"created": 0}


@pytest.mark.backend_neutral
def test_the_password_can_come_from_a_file(workspace, engine, cli):
    password = _password()
    secret_file = workspace.path / "admin-password"
    secret_file.write_text(password + "\n", encoding="utf-8")
    _seed(cli, workspace, password=None, CRONWARDEN_ADMIN_PASSWORD_FILE=str(secret_file))
    assert _verify(_users(engine)[0]["password_hash"], password)


@pytest.mark.backend_neutral
def test_a_missing_or_short_password_is_a_configuration_error_for_this_job_only(workspace, engine, cli):
    missing = _seed(cli, workspace, password=None, code=78)
    assert missing.stderr.strip() == ("cronwarden: error: configuration: [jobs.admin-seed] password: not set; set "
                                      "CRONWARDEN_ADMIN_PASSWORD or CRONWARDEN_ADMIN_PASSWORD_FILE")
    short = _seed(cli, workspace, password="elevenchars", code=78)
    assert "at least 12 characters, got 11" in short.stderr and "elevenchars" not in short.stderr
    assert _seed(cli, workspace, "--dry-run", password=None, code=78)
    assert _users(engine) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM job_runs")).scalar() == 0
    with time_machine.travel(NOW, tick=False):
        assert cli(workspace, "list").exit_code == 0
        assert cli(workspace, "refresh-token-cleanup", "--force").exit_code == 0


def test_the_password_appears_in_no_output_log_or_history(workspace, engine, cli):
    password = _password()
    outputs = []
    for args in (("--dry-run",), (), ()):
        result = _seed(cli, workspace, *args, password=password)
        outputs += [result.stdout, result.stderr]
    json_logs = _seed(cli, workspace, password=password, before=("--log-format", "json", "--verbose"))
    outputs += [json_logs.stdout, json_logs.stderr]
    with time_machine.travel(NOW, tick=False):
        for args in (("history", "--json"), ("status", "--json"), ("list",)):
            result = cli(workspace, *args, env={"CRONWARDEN_ADMIN_PASSWORD": password})
            outputs += [result.stdout, result.stderr]
    with engine.connect() as conn:
        stored = [repr(tuple(row)) for table in (runs, executions) for row in conn.execute(select(table))]
        stored += [repr(tuple(row)) for row in conn.execute(select(users))]
    assert len(stored) >= 3 and all(out is not None for out in outputs)
    assert not [chunk for chunk in outputs + stored if password in chunk]


def test_two_seeds_started_together_create_exactly_one_administrator(workspace, engine):
    env = workspace.env(CRONWARDEN_ADMIN_PASSWORD=_password())
    procs = [workspace.popen("admin-seed", "--force", "--json", env=env) for _ in range(2)]
    results = [(*p.communicate(timeout=120), p.returncode) for p in procs]
    results = [(code, out, err) for out, err, code in results]
    assert [code for code, _, _ in results] == [0, 0], results
    statuses = sorted(json.loads(out)["status"] for _, out, _ in results)
    assert statuses in (["locked", "succeeded"], ["succeeded", "succeeded"])
    created = sum(json.loads(out).get("counts", {}).get("created", 0) for _, out, _ in results)
    assert created == 1
    admins = [u for u in _users(engine) if u["is_admin"]]
    assert len(admins) == 1 and admins[0]["username"] == "admin"


def test_a_seed_that_loses_the_race_at_the_unique_constraint_creates_nothing(workspace, engine, cli, monkeypatch):
    from jobs.builtin import admin_seed

    with engine.begin() as conn:
        conn.execute(insert(users).values(username="admin", email="first@example.com", password_hash="first",
                                          is_admin=True, created_at=NOW))
    before = _users(engine)
    real_present, blind = admin_seed._present, []

    def present_unseen_twice(conn, table, username):
        blind.append(1)
        return None if len(blind) <= 2 else real_present(conn, table, username)

    monkeypatch.setattr(admin_seed, "_present", present_unseen_twice)
    report = json.loads(_seed(cli, workspace, password=_password()).stdout)
    assert len(blind) == 3 and report["status"] == "succeeded" and report["counts"] == {"created": 0}
    assert _users(engine) == before


def test_a_seeded_job_without_its_password_is_simply_not_due(workspace, engine, cli):
    """Re-applying a deploy Job after the secret was removed must not fail: the work is done."""
    _seed(cli, workspace, password=_password())
    with time_machine.travel(NOW, tick=False):
        result = cli(workspace, "admin-seed", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "not_due"
