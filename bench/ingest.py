"""Reading a time column: seconds to parse N date strings into timestamps, per date format.

`_parse_time` of pipeline/data/readers.py (format guessing, the day/month order decision, strict parsing)
on a synthetic half-hourly series written in each format; with `--against REF` the same function as it
was at git revision REF runs in the same process, round-robin, so both sides see the same load. Both
results are checked against the true timestamps (a fast wrong reading is no result).

    .venv/bin/python bench/ingest.py [--rows 100000] [--repeats 3] [--against 82f23fa] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cellcast.pipeline.data import dates  # noqa: E402

RESULTS = ROOT / "bench" / "results"
FORMATS = {
    "iso": "%Y-%m-%d %H:%M",
    "day-first": "%d/%m/%Y %H:%M",
    "month-first 12h": "%m/%d/%Y %I:%M %p",
    "day-first 2-digit year": "%d.%m.%y %H:%M",
}


def old_parser(ref: str):
    """`_parse_time` at git revision `ref`: data/dates.py, or readers.py before the date reading had a module
    of its own (its relative imports pointed at the package)."""
    for file in ("pipeline/data/dates.py", "pipeline/data/readers.py"):
        shown = subprocess.run(["git", "show", f"{ref}:{file}"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode == 0:
            break
    src = shown.stdout.replace("from ..errors import", "from cellcast.pipeline.errors import").replace(
        "from .panel import", "from cellcast.pipeline.data.panel import"
    )
    path = Path(tempfile.mkdtemp()) / "readers_then.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("readers_then", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return lambda s: mod._parse_time(Path("bench.csv"), s, "time", "csv")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--against", help="git revision whose _parse_time to compare with")
    ap.add_argument("--quick", action="store_true", help="smoke run: 5,000 rows, one repeat, no results file")
    args = ap.parse_args()
    rows, repeats = (5000, 1) if args.quick else (args.rows, args.repeats)
    methods = {"now": lambda s: dates._parse_time(Path("bench.csv"), s, "time", lambda i: f"line {i + 2}")[0]}
    if args.against:
        methods[args.against] = old_parser(args.against)
    truth = pd.date_range("2020-01-01", periods=rows, freq="30min")
    lines = []
    for label, fmt in FORMATS.items():
        s = pd.Series(truth.strftime(fmt))
        times = {m: [] for m in methods}
        for _ in range(repeats):
            for m, fn in methods.items():  # round-robin: both sides under the same load
                t0 = time.perf_counter()
                try:
                    got = fn(s)
                    ok = bool((got.to_numpy() == truth.to_numpy()).all())
                except Exception as e:  # the old reader may refuse a format: that is a result too
                    ok = f"{type(e).__name__}: {str(e)[:80]}"
                times[m].append((time.perf_counter() - t0, ok))
        for m, runs in times.items():
            secs = statistics.median(t for t, _ in runs)
            line = {
                "bench": "ingest_time_column",
                "format": label,
                "strftime": fmt,
                "rows": rows,
                "method": m,
                "seconds": round(secs, 3),
                "rows_per_s": round(rows / secs),
                "correct": runs[0][1],
                "machine": platform.node(),
                "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            }
            lines.append(line)
            print(json.dumps(line))
    print(f"\n| format | {' | '.join(f'{m} s (correct)' for m in methods)} |")
    print("| --- | " + " | ".join("---:" for _ in methods) + " |")
    for label in FORMATS:
        cells = [
            next(f"{x['seconds']:.2f} ({x['correct']})" for x in lines if x["format"] == label and x["method"] == m)
            for m in methods
        ]
        print(f"| {label} | {' | '.join(cells)} |")
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(RESULTS / "ingest-cpu.jsonl", "a") as f:
            f.writelines(json.dumps(x) + "\n" for x in lines)


if __name__ == "__main__":
    main()
