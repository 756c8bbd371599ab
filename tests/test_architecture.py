"""The dependency rules the folder tree promises, checked on the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JOB_AUTHOR_API = {"jobs.spec", "jobs.context", "jobs.errors", "jobs.app_tables", "jobs.settings", "jobs.secrets",
                  "jobs.builtin", "jobs.schedule", "jobs.clock", "jobs.files", "jobs.batches"}


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
    for path in _py("jobs"):
        bad = {m for m in _imports(path) if m.split(".")[0] in ("cli", "typer", "rich")}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_builtin_jobs_use_only_the_job_author_api():
    for path in _py("jobs/builtin"):
        internal = {m for m in _imports(path) if m.startswith("jobs.") and not m.startswith("jobs.builtin.")}
        assert internal <= JOB_AUTHOR_API, f"{path.relative_to(REPO)} imports {internal - JOB_AUTHOR_API}"


def test_only_render_prints():
    for path in _py("cli") + _py("jobs"):
        if path.name == "render.py":
            continue
        calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Name) and n.func.id == "print"]
        assert not calls, f"{path.relative_to(REPO)} prints"


def test_files_are_utf8_without_bom_and_indented_with_spaces():
    for path in _py("cli") + _py("jobs") + _py("tests"):
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
