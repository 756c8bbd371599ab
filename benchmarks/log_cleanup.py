"""log-cleanup's file sweep on N files (default 100,000, mtimes spread over 60 days) against find(1).

Each round builds two identical folders (same names, sizes and mtimes), flushes them to disk (unless
--no-sync), then times, in alternating order, two whole processes:

  find    find DIR -maxdepth 1 -name '*.log' -type f -mtime +30 -delete
  job     cronwarden log-cleanup --force --json --retention-days 31   (log_directory = the other folder;
          SQLite database with an empty logs table: start-up, due check, lock and tracking rows included)

`-mtime +30` means "31 whole days old or more", so the job runs with --retention-days 31 and both delete
the same files (checked). Also timed: the same job on an empty folder (the fixed cost of a cronwarden
process), and the job's own run duration from --json (the sweep without the process around it).
Aim: the job within 1.2x find, process start included.

    /work/venv/bin/python benchmarks/log_cleanup.py [--files 100000] [--rounds 2] [--no-sync] [--python-m]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_env, cronwarden_argv, machine, run, timed_child

DAYS = 60
AIM = 1.2


def make_folder(folder: Path, files: int, now: float) -> None:
    folder.mkdir()
    payload = b"x" * 200
    for i in range(files):
        path = folder / f"app-{i:06d}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
        age = 60 + i * DAYS * 86400 / files
        if abs(age - 31 * 86400) < 3600:
            age += 7200  # keep clear of the 31-day boundary, which find and the job cross a few seconds apart
        os.utime(path, (now - age, now - age))


def timed_find(folder: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["find", str(folder), "-maxdepth", "1", "-name", "*.log", "-type", "f", "-mtime", "+30",
                    "-delete"], check=True)
    return time.perf_counter() - started


def timed_job(cw: list[str], env: dict[str, str], work: Path, folder: Path) -> tuple[float, int, dict]:
    (work / "cronwarden.toml").write_text(f'[jobs.log-cleanup]\nlog_directory = "{folder}"\n', encoding="utf-8")
    wall, rss, result = timed_child([*cw, "log-cleanup", "--force", "--json", "--retention-days", "31"],
                                    env=env, cwd=work)
    if result.returncode != 0:
        raise SystemExit(f"cronwarden exited {result.returncode}: {result.stderr}{result.stdout}")
    return wall, rss, json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000, help="files in the folder (default 100,000)")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds (default 2)")
    parser.add_argument("--no-sync", action="store_true",
                        help="do not flush the new files to disk first: unlinks then cost CPU only and the "
                             "per-file overhead of Python shows (old log files are on disk in real life)")
    parser.add_argument("--python-m", action="store_true", help="run `python -m cli` instead of the console script")
    args = parser.parse_args()
    cw = cronwarden_argv(args.python_m)

    with tempfile.TemporaryDirectory(prefix="cw-bench-logs-") as tmp:
        work = Path(tmp)
        env = bench_env(work, f"sqlite:///{work / 'cronwarden.db'}", CRONWARDEN_CONFIG=str(work / "cronwarden.toml"))
        (work / "cronwarden.toml").write_text("")
        run([*cw, "db", "upgrade", "--app-tables"], env=env, cwd=work)
        (work / "empty").mkdir()
        for _ in range(2):
            timed_job(cw, env, work, work / "empty")
        finds, jobs, runs, empties, rss = [], [], [], [], []
        for round_no in range(args.rounds):
            now = time.time()
            for name in ("find", "job"):
                make_folder(work / name, args.files, now)
            if not args.no_sync:
                os.sync()
            order = ("find", "job") if round_no % 2 == 0 else ("job", "find")
            for what in order:
                if what == "find":
                    finds.append(timed_find(work / "find"))
                else:
                    wall, peak, report = timed_job(cw, env, work, work / "job")
                    jobs.append(wall)
                    runs.append(report["duration_seconds"])
                    rss.append(peak)
                    deleted = report["counts"]["files_deleted"]
            left = {name: len(os.listdir(work / name)) for name in ("find", "job")}
            if left["find"] != left["job"] or deleted != args.files - left["job"]:
                raise SystemExit(f"find and the job disagree: {left}, job deleted {deleted}")
            wall, _, _ = timed_job(cw, env, work, work / "empty")
            empties.append(wall)
            for name in ("find", "job"):
                shutil.rmtree(work / name)

        def show(values: list[float]) -> str:
            ms = sorted(v * 1000 for v in values)
            return f"median {statistics.median(ms):7.1f} ms  (min {ms[0]:7.1f}, max {ms[-1]:7.1f})"

        print(f"machine: {machine()}")
        print(f"{args.files:,} files over {DAYS} days, {deleted:,} deleted per run, {args.rounds} rounds, "
              f"files {'in the page cache only' if args.no_sync else 'flushed to disk (sync)'} before each run, "
              f"cronwarden run as: {' '.join(cw)}")
        print(f"  find -delete                         {show(finds)}")
        print(f"  cronwarden log-cleanup (process)     {show(jobs)}   peak RSS {max(rss) / 1024:.0f} MiB")
        print(f"  cronwarden log-cleanup (run, --json) {show(runs)}")
        print(f"  cronwarden log-cleanup, empty folder {show(empties)}")
        ratio = statistics.median(jobs) / statistics.median(finds)
        print(f"job process / find: {ratio:.2f}x (aim <= {AIM}x: {'met' if ratio <= AIM else 'MISSED'}); "
              f"job run / find: {statistics.median(runs) / statistics.median(finds):.2f}x; "
              f"job process - empty-folder process: {statistics.median(jobs) - statistics.median(empties):.3f} s")


if __name__ == "__main__":
    main()
