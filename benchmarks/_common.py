"""Helpers shared by the benchmark scripts: timing whole processes, the environment they run in, the machine."""

from __future__ import annotations

import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

VENV = Path(sys.executable).parent
CRONWARDEN = VENV / "cronwarden"
REPO = Path(__file__).resolve().parent.parent
TIME = "/usr/bin/time"
PYCACHE = Path(tempfile.gettempdir()) / "cronwarden-bench-pycache"
PG_ADMIN_URL = os.environ.get("CRONWARDEN_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def cronwarden_argv(python_m: bool = False) -> list[str]:
    """The console script (what cron runs), or `python -m cli` when the script is not installed."""
    if python_m or not CRONWARDEN.exists():
        return [sys.executable, "-m", "cli"]
    return [str(CRONWARDEN)]


def bench_env(directory: Path, database_url: str, *, bytecode_cache: bool = True, **extra: str) -> dict[str, str]:
    """The environment of a cronwarden process: no inherited CRONWARDEN_* settings, everything in `directory`.

    bytecode_cache: an installed wheel has its .pyc files; an editable checkout run with
    PYTHONDONTWRITEBYTECODE=1 recompiles every module of the tool on every run. Keep a cache
    outside the source tree (PYTHONPYCACHEPREFIX; Python then ignores the __pycache__ folders
    of site-packages too, so the first runs fill it: warm up before measuring).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRONWARDEN_", "OTEL_"))}
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env.update(CRONWARDEN_DATABASE_URL=database_url, CRONWARDEN_LOCK_DIR=str(directory / "locks"), **extra)
    return env


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), env=dict(env) if env is not None else None, cwd=cwd,
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} exited {result.returncode}:\n{result.stderr}{result.stdout}")
    return result


def timed(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one whole process, output discarded.

    Wall time is what cron pays per tick; CPU time is steadier on a shared machine.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(list(argv), env=dict(env) if env is not None else None, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} exited {code}")
    return elapsed, usage.ru_utime + usage.ru_stime


def timed_child(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                cwd: Path | None = None) -> tuple[float, int, subprocess.CompletedProcess]:
    """Wall time, peak RSS (KiB) and output of one child process.

    The peak comes from /usr/bin/time -v: on Linux a child's own ru_maxrss (wait4,
    RUSAGE_CHILDREN) starts from its parent's RSS at fork, which here would be this
    benchmark's, so the child is started from the small `time` process instead.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        prefix = [TIME, "-f", "%M", "-o", report.name] if Path(TIME).exists() else []
        started = time.perf_counter()
        result = subprocess.run([*prefix, *argv], env=dict(env) if env is not None else None, cwd=cwd,
                                capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        lines = Path(report.name).read_text().split()
    rss_kib = int(lines[-1]) if prefix and lines and lines[-1].isdigit() else -1
    return elapsed, rss_kib, result


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """median, min and max in milliseconds."""
    ms = sorted(v * 1000 for v in values)
    return f"median {statistics.median(ms):7.1f} ms  (min {ms[0]:6.1f}, max {ms[-1]:6.1f}, n={len(ms)})"


def machine() -> str:
    cores = os.cpu_count()
    try:
        mem_kib = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                           if line.startswith("MemTotal")).split()[1])
        mem = f"{mem_kib / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        mem = "?"
    import sqlalchemy

    return (f"{cores} cores, {mem} RAM, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"SQLAlchemy {sqlalchemy.__version__}, {platform.system()} {platform.release()}")


def postgres_version(admin_url: str = PG_ADMIN_URL) -> str | None:
    try:
        import psycopg

        with psycopg.connect(admin_url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]
    except Exception:  # noqa: BLE001 - a missing server only skips the PostgreSQL part
        return None
