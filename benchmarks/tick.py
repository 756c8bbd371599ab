"""What a not-due tick costs: `cronwarden refresh-token-cleanup` as a whole process, against two floors.

Floors, run in the same rounds as the tick (order rotated each round):
  (a) Python opening the SQLite database and reading the tracking row with sqlite3;
  (b) a minimal typer app with one option reading the same row through SQLAlchemy Core.
Aim: the tick within 1.3x floor (b). Also times `cronwarden --help` and `cronwarden list`,
and lists the modules the tick imports beyond floor (b), by cumulative import time.

    /work/venv/bin/python benchmarks/tick.py [--runs 25] [--python-m]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_env, cronwarden_argv, machine, median, run, spread, timed  # noqa: E402

JOB = "refresh-token-cleanup"
AIM = 1.3

SQLITE_FLOOR = """\
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
row = conn.execute("SELECT * FROM recurring_job_executions WHERE job_name = ?", (sys.argv[2],)).fetchone()
conn.close()
print(row is not None)
"""

TYPER_FLOOR = """\
import typer
from sqlalchemy import column, create_engine, select, table

app = typer.Typer(add_completion=False)


@app.command()
def main(job: str, database_url: str = typer.Option(..., envvar="CRONWARDEN_DATABASE_URL")) -> None:
    executions = table("recurring_job_executions", column("job_name"), column("next_scheduled_at"))
    engine = create_engine(database_url)
    with engine.connect() as conn:
        row = conn.execute(select(executions).where(executions.c.job_name == job)).first()
    engine.dispose()
    print(row is not None)


if __name__ == "__main__":
    app()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25, help="measured runs of each command (default 25)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--python-m", action="store_true", help="run `python -m cli` instead of the console script")
    parser.add_argument("--top", type=int, default=30, help="import-time lines to show")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="keep the inherited PYTHONDONTWRITEBYTECODE (the editable checkout then recompiles "
                             "every run); by default a .pyc cache under the temp dir stands in for an installed wheel")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cw-tick-") as tmp:
        work = Path(tmp)
        db = work / "cronwarden.db"
        env = bench_env(work, f"sqlite:///{db}", bytecode_cache=not args.no_bytecode_cache)
        cw = cronwarden_argv(args.python_m)
        run([*cw, "db", "upgrade", "--app-tables"], env=env, cwd=work)
        run([*cw, JOB], env=env, cwd=work)
        first = run([*cw, JOB, "--json"], env=env, cwd=work)
        if '"not_due"' not in first.stdout:
            raise SystemExit(f"the tick is not a not-due tick: {first.stdout}")
        (work / "sqlite_floor.py").write_text(SQLITE_FLOOR)
        (work / "typer_floor.py").write_text(TYPER_FLOOR)

        commands = {
            "tick (not due)": [*cw, JOB],
            "floor a: sqlite3": [sys.executable, str(work / "sqlite_floor.py"), str(db), JOB],
            "floor b: typer+SQLAlchemy": [sys.executable, str(work / "typer_floor.py"), JOB],
            "cronwarden --help": [*cw, "--help"],
            "cronwarden list": [*cw, "list"],
        }
        names = list(commands)
        wall: dict[str, list[float]] = defaultdict(list)
        cpu: dict[str, list[float]] = defaultdict(list)
        for round_no in range(args.warmup + args.runs):
            order = names[round_no % len(names):] + names[:round_no % len(names)]
            for name in order:
                elapsed, used = timed(commands[name], env=env, cwd=work)
                if round_no >= args.warmup:
                    wall[name].append(elapsed)
                    cpu[name].append(used)

        print(f"machine: {machine()}")
        print(f"cronwarden run as: {' '.join(cw)}; bytecode cache: "
              f"{'inherited environment' if args.no_bytecode_cache else 'yes (PYTHONPYCACHEPREFIX)'}")
        print()
        print("wall time per process:")
        for name in names:
            print(f"  {name:28s} {spread(wall[name])}")
        print("CPU time (user + system) per process:")
        for name in names:
            print(f"  {name:28s} {spread(cpu[name])}")
        floor_b = "floor b: typer+SQLAlchemy"
        print()
        print(f"{'ratio of medians':36s}  wall    CPU")
        for label, name, floor in (("tick / floor a (sqlite3)", "tick (not due)", "floor a: sqlite3"),
                                   ("tick / floor b (typer+SQLAlchemy)", "tick (not due)", floor_b),
                                   ("--help / floor b", "cronwarden --help", floor_b),
                                   ("list / floor b", "cronwarden list", floor_b)):
            print(f"{label:36s} {median(wall[name]) / median(wall[floor]):5.2f}x {median(cpu[name]) / median(cpu[floor]):5.2f}x")
        ratio = median(wall["tick (not due)"]) / median(wall[floor_b])
        print(f"aim: tick within {AIM}x floor b (wall): {'met' if ratio <= AIM else 'MISSED'} ({ratio:.2f}x)")
        print()
        import_report(cw, commands["floor b: typer+SQLAlchemy"], env, work, args.top)


def import_times(argv: list[str], env: dict[str, str], cwd: Path, repeat: int = 3) -> dict[str, tuple[int, int, int]]:
    """module -> (self us, cumulative us, depth): the lowest of `repeat` runs of -X importtime."""
    best: dict[str, tuple[int, int, int]] = {}
    line = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
    for _ in range(repeat):
        result = run([argv[0], "-X", "importtime", *argv[1:]], env=env, cwd=cwd)
        for m in line.finditer(result.stderr):
            self_us, cum_us, depth, name = int(m[1]), int(m[2]), len(m[3]) // 2, m[4]
            if name not in best or cum_us < best[name][1]:
                best[name] = (self_us, cum_us, depth)
    return best


def import_report(cw: list[str], floor: list[str], env: dict[str, str], cwd: Path, top: int) -> None:
    tick_argv = [sys.executable, "-m", "cli", JOB] if cw[0] != sys.executable else [*cw, JOB]
    tick = import_times(tick_argv, env, cwd)
    base = import_times(floor, env, cwd)
    total = sum(s for s, _, _ in tick.values())
    print(f"imports of the tick ({' '.join(['python', '-X', 'importtime', *tick_argv[1:]])}): {len(tick)} modules, "
          f"{total / 1000:.0f} ms of import time (floor b: {len(base)} modules, "
          f"{sum(s for s, _, _ in base.values()) / 1000:.0f} ms)")
    print(f"top {top} by cumulative time (ms, self / cumulative):")
    for name, (self_us, cum_us, depth) in sorted(tick.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"  {cum_us / 1000:7.1f} {self_us / 1000:6.1f}  {'  ' * min(depth, 6)}{name}")
    extra: dict[str, int] = defaultdict(int)
    for name, (self_us, _, _) in tick.items():
        if name not in base:
            extra[_group(name)] += self_us
    print("imported by the tick but not by floor b, grouped (self time, ms):")
    for group, us in sorted(extra.items(), key=lambda kv: -kv[1]):
        if us >= 300:
            print(f"  {us / 1000:7.1f}  {group}")


def _group(module: str) -> str:
    """cronwarden's own modules one by one; third-party and stdlib by their top package."""
    parts = module.split(".")
    if parts[0] in ("cli", "jobs"):
        return module
    if parts[0] == "sqlalchemy" and len(parts) > 2:
        return ".".join(parts[:3])
    return parts[0]


if __name__ == "__main__":
    main()
