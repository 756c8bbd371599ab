"""Run every reliability script in turn, within one time budget, then write RELIABILITY.md.

    python reliability/run_all.py                      # every script at its full size (hours bound)
    python reliability/run_all.py --max-seconds 1800   # the same, sharing 30 minutes
    python reliability/run_all.py --report-only        # rewrite RELIABILITY.md from reliability/results/

Each script also runs alone (`python reliability/crash.py --help`). Exit code: 1 when any script
found a broken invariant or crashed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("mutual_exclusion", "crash", "graceful_stop", "db_faults", "smtp_faults", "bad_input", "hosts")
MARKDOWN = HERE.parent / "RELIABILITY.md"
BEGIN, END = "<!-- figures: begin -->", "<!-- figures: end -->"


def run(names: list[str], seconds: float | None, extra: list[str]) -> int:
    worst = 0
    start = time.monotonic()
    for i, name in enumerate(names):
        cmd = [sys.executable, str(HERE / f"{name}.py"), *extra]
        if seconds is not None:
            left = seconds - (time.monotonic() - start)
            cmd += ["--max-seconds", str(max(30, int(left / (len(names) - i))))]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        code = subprocess.call(cmd)
        print(f"=== {name}: exit {code}", flush=True)
        worst = max(worst, 0 if code == 0 else 1)
    return worst


def figures_markdown(names: list[str]) -> str:
    """The results of the latest run of each script, as Markdown tables."""
    parts = []
    for name in names:
        path = HERE / "results" / f"{name}.json"
        if not path.exists():
            parts.append(f"### {name}\n\nNot run yet.\n")
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        total = sum(lg["violations"] for lg in data["ledgers"])
        lines = [f"### {data['title']}", "",
                 f"`reliability/{name}.py`, run of {data['started']}, {data['seconds']:.0f} s; "
                 f"**{total} invariant violations**.", "",
                 "| scenario | backend | rounds | faults injected | invariants checked | violations | figures |",
                 "|---|---|---:|---|---:|---:|---|"]
        for lg in data["ledgers"]:
            faults = ", ".join(f"{k} {v}" for k, v in sorted(lg["faults"].items())) or "–"
            figures = ", ".join(f"{k} {v}" for k, v in lg["figures"].items()) or "–"
            rounds = f"{lg['rounds']}{' (stopped by time)' if lg['stopped_by_time'] else ''}"
            lines.append(f"| {lg['scenario']} | {lg['backend']} | {rounds} | {faults} | {lg['checks']} | "
                         f"{lg['violations']} | {figures} |")
        for lg in data["ledgers"]:
            lines += [f"- violation, {lg['scenario']} [{lg['backend']}]: {m}" for m in lg["messages"]]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def write_markdown(names: list[str]) -> None:
    """Replace the generated part of RELIABILITY.md, keeping the prose around it."""
    text = MARKDOWN.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    MARKDOWN.write_text(f"{head}{BEGIN}\n{figures_markdown(names)}{END}{tail}", encoding="utf-8")
    print(f"wrote {MARKDOWN}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated scripts to run")
    parser.add_argument("--max-seconds", type=float, default=None, help="budget shared by the scripts")
    parser.add_argument("--report-only", action="store_true", help="only rewrite RELIABILITY.md")
    parser.add_argument("--no-report", action="store_true", help="do not touch RELIABILITY.md")
    args, extra = parser.parse_known_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    code = 0 if args.report_only else run(names, args.max_seconds, extra)
    if not args.no_report:
        write_markdown(list(SCRIPTS))
    return code


if __name__ == "__main__":
    sys.exit(main())
