"""The dependency rules the folder tree promises, checked on the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# A built-in is written as a user's plugin job: the public job API, its sibling modules, the standard
# library, SQLAlchemy, and the third-party packages named here (admin-seed hashes with argon2).
BUILTIN_MAY_IMPORT = {"cronwarden", "sqlalchemy", "argon2", "__future__"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            else:
                found.add(node.module or "")
    return found


def _py(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def test_jobs_never_import_the_cli_typer_or_rich():
    for path in _py("jobs") + _py("cronwarden"):
        bad = {m for m in _imports(path) if m.split(".")[0] in ("cli", "typer", "rich")}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def _imported_names(path: Path, module: str) -> set[str]:
    return {alias.name for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.ImportFrom) and node.module == module and not node.level for alias in node.names}


def test_builtin_jobs_import_only_the_public_job_api_their_siblings_stdlib_and_sqlalchemy():
    for path in _py("jobs/builtin"):
        name = path.relative_to(REPO).as_posix()
        bad = {m for m in _imports(path) if not m.startswith("jobs.builtin")
               and m.split(".")[0] not in BUILTIN_MAY_IMPORT | sys.stdlib_module_names}
        assert not bad, f"{name} imports {bad}: a built-in imports only `cronwarden`, as a plugin job does"


def test_builtin_jobs_leave_signals_timeouts_and_lost_locks_to_the_pipeline():
    """The runner classifies how a run ended; a job that caught these would drive a pipeline of its own."""
    for path in _py("jobs/builtin"):
        handled = {ast.unparse(node.type) for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                   if isinstance(node, ast.ExceptHandler) and node.type is not None}
        caught = {name for name in ("Interrupted", "TimedOut", "LeaseLost", "BaseException")
                  if any(name in text for text in handled)}
        assert not caught, f"{path.relative_to(REPO)} catches {caught}"


def test_the_plugin_test_package_imports_the_job_api_as_cronwarden():
    for path in _py("tests/plugin_pkg"):
        internal = {m for m in _imports(path) if m.split(".")[0] in ("jobs", "cli")}
        assert not internal, f"{path.relative_to(REPO)} imports {internal}: a user's job imports cronwarden"


def test_cronwarden_exports_what_the_builtins_import_and_resolves_every_name():
    import cronwarden

    used = set().union(*(_imported_names(path, "cronwarden") for path in _py("jobs/builtin")))
    assert used <= set(cronwarden.__all__), used - set(cronwarden.__all__)
    for name in cronwarden.__all__:
        assert getattr(cronwarden, name) is not None, name


def test_importing_cronwarden_loads_no_sqlalchemy_typer_rich_or_pydantic():
    probe = ("import sys, cronwarden; from cronwarden import JobContext, JobSpec, setting, BatchSize;\n"
             "print(','.join(m for m in ('sqlalchemy', 'typer', 'rich', 'pydantic') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing cronwarden loaded {result.stdout.strip()}"


def test_the_old_jobs_import_name_still_gives_the_same_objects():
    import cronwarden
    import jobs

    for name in jobs.__all__:
        assert getattr(jobs, name) is getattr(cronwarden, name), name


def test_the_cli_runs_no_sql_and_opens_no_transaction():
    """cli/ parses, calls the framework's operations and renders: SQL and transactions live in jobs/."""
    for path in _py("cli"):
        source = path.read_text(encoding="utf-8")
        bad = {m for m in _imports(path) if m.split(".")[0] == "sqlalchemy"}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"
        calls = [n.func.attr for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Attribute) and n.func.attr in ("begin", "connect", "execute", "commit")]
        assert not calls, f"{path.relative_to(REPO)} calls {calls}"


def test_the_cli_reaches_the_database_only_through_the_operations():
    """Tables, schema and locks are the framework's: cli/ calls jobs.operations and jobs.queue.operations
    (runs jobs through jobs.runner, decides a quick tick through jobs.tick)."""
    storage = {"jobs.tracking", "jobs.schema", "jobs.migrations", "jobs.models", "jobs.locks", "jobs.db",
               "jobs.app_tables", "jobs.queue.store", "jobs.queue.models", "jobs.builtin"}
    for path in _py("cli"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        submodules = {f"jobs.{alias.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                      and node.module == "jobs" and not node.level for alias in node.names}
        bad = {m for m in _imports(path) | submodules
               if any(m == part or m.startswith(part + ".") for part in storage)}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_the_core_never_imports_the_queue():
    """The queue registers itself as an extension of the core (jobs/extensions.py); the core asks the
    registry, so only the queue itself and the built-ins may import jobs.queue."""
    for path in _py("jobs"):
        part = path.relative_to(REPO / "jobs").parts[0]
        if part in ("queue", "builtin"):
            continue
        bad = {m for m in _imports(path) if m == "jobs.queue" or m.startswith("jobs.queue.")}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_lock_policy_is_the_backends_not_the_clis():
    """Each lock backend decides how `unlock` breaks its lock: the CLI neither asks a backend what it can do
    nor takes, breaks or describes a lock itself."""
    for path in _py("cli"):
        source = path.read_text(encoding="utf-8")
        found = [word for word in ("break_lease", "try_acquire", "crash_bound", ".locks") if word in source]
        assert not found, f"{path.relative_to(REPO)} uses {found}"


def test_only_render_prints():
    for path in _py("cli") + _py("jobs") + _py("cronwarden"):
        if path.name == "render.py":
            continue
        calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Name) and n.func.id == "print"]
        assert not calls, f"{path.relative_to(REPO)} prints"


def test_files_are_utf8_without_bom_and_indented_with_spaces():
    for path in _py("cli") + _py("jobs") + _py("cronwarden") + _py("tests"):
        raw = path.read_bytes()
        assert not raw.startswith(b"\xef\xbb\xbf"), path
        assert b"\n\t" not in raw, path


def test_a_package_named_jobs_that_shadows_ours_is_refused(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "__init__.py").write_text("raise SystemExit('the wrong jobs package was imported')\n")
    launcher = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); sys.path.insert(1, {str(REPO)!r}); " \
               "from cli.app import main; raise SystemExit(main(['list']))"
    result = subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, cwd=tmp_path,
                            timeout=60)
    assert result.returncode == 78
    assert "shadows cronwarden's" in result.stderr and "wrong jobs package" not in result.stderr


def test_a_not_due_tick_imports_no_retry_lock_or_driver_machinery(sqlite_workspace):
    sqlite_workspace.run("refresh-token-cleanup")
    probe = ("import sys, runpy; sys.argv = ['cronwarden', 'refresh-token-cleanup'];\n"
             "from cli.app import main\ncode = main(sys.argv[1:])\n"
             "heavy = [m for m in ('tenacity', 'filelock', 'smtplib', 'argon2', 'rich.table',"
             " 'psycopg', 'pymysql', 'cronsim') if m in sys.modules]\nprint(','.join(heavy))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=sqlite_workspace.path, env=sqlite_workspace.env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"a not-due tick imported {result.stdout.strip()}"


def test_the_core_schema_never_imports_the_queue_which_registers_itself_as_an_extension():
    for name in ("models", "schema", "migrations", "ddl", "tracking", "extensions"):
        path = REPO / "jobs" / f"{name}.py"
        bad = {m for m in _imports(path) if m == "jobs.queue" or m.startswith("jobs.queue.")}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"
    from jobs.extensions import registered
    from jobs.registry import builtin_extensions

    assert "queue" in {ext.name for ext in builtin_extensions()}
    assert {ext.name for ext in registered()} == {ext.name for ext in builtin_extensions()}


def test_a_not_due_tick_imports_no_migration_or_ddl(sqlite_workspace):
    sqlite_workspace.run("refresh-token-cleanup")
    probe = ("import sys\nfrom cli.app import main\ncode = main(['refresh-token-cleanup'])\n"
             "print(code, ','.join(m for m in ('jobs.migrations', 'jobs.ddl', 'jobs.queue') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=sqlite_workspace.path, env=sqlite_workspace.env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0"], result.stdout
