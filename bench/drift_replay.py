"""The monitor's drift rule replayed over hourly refreshes of two bundled series, the older rule (PSI above 0.25 and
above the max of non-overlapping training windows) against the calibrated one (above 1.5x the max of every training
window of as many rows, on the values and on their seasonal differences), in one run. No training: the reference
profile is built from the training split with the library's functions (data/drift.py), the recent window slid
forward, and every refresh judged by monitoring/verdict.py (accuracy left out: drift alone).

    PYTHONPATH=$PWD .venv/bin/python bench/drift_replay.py            # elecdemand and chicago
    PYTHONPATH=$PWD .venv/bin/python bench/drift_replay.py --datasets chicago --margins 1.25 2 --out /tmp/x.jsonl

Per dataset (params.yaml's lookback, monitor section and split fractions for it):
- the training split: the first 1 - val_fraction - test_fraction of the rows; the profile over all its variables,
  with drift_rows as the monitor resolves it and the seasonal differences at the frequency's shortest season;
- the replay: a refresh every hour from the end of the training split, for a year or to the end of the data
  (elecdemand holds one year, 2014: its replay is the last 30%, mid-September to December; chicago's daily rows
  change once every 24 refreshes: one distinct evaluation a day, counted once);
- unchanged: refreshes with a drift breach (false alarms), and retrains they would start under the 24 h cooldown;
- planted, from each of 4 onsets spread over the replay, on the targets only: a level shift of +1 and +2 standard
  deviations of the training rows, and added noise as large as the training seasonal differences' standard
  deviation (their variance doubles) and twice as large; the delay is the hours from the onset to the first refresh
  with a drift breach that the unchanged series does not have at that refresh (a rule that fires on the unchanged
  series anyway detects nothing by firing there), searched until a whole recent window lies after the onset and a
  week more, past the replay year where the data go on (chicago: its window is 364 days), else missed.
Prints JSON lines (one per dataset, rule and scenario), then a markdown table; --out appends the lines to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cellcast.pipeline.config import load_params  # noqa: E402
from cellcast.pipeline.data import datasets as bundled  # noqa: E402
from cellcast.pipeline.data import drift as drifts  # noqa: E402
from cellcast.pipeline.monitoring import verdict  # noqa: E402

ONSETS = 4
NO_ACCURACY = {"points": 0, "mase": float("nan")}


def older(d: dict) -> dict:
    """The drift figures as a model trained before the calibrated fields is judged: psi_normal only."""
    return {k: {**v, "psi_windows": None, "residual_windows": None} for k, v in d.items()}


RULES: dict[str, tuple] = {}  # name: (what the drift figures look like to it, its psi_margin or None: params')


def setup(name: str) -> dict:
    settings = load_params().for_dataset(name)
    info = bundled.dataset_info(name)
    frame = bundled.load_bundled(name)
    frame = frame.sort_values("timestamp").reset_index(drop=True)
    w = settings.window
    ntr = int(len(frame) * (1 - w.val_fraction - w.test_fraction))
    freq = info.freq
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
    lookback = w.lookback if isinstance(w.lookback, int) else int(pd.Timedelta("1D") / step) * 8
    m = settings.monitor
    rows = drifts.window_rows(m.drift_rows, lookback, m.psi_bins)
    variables = [c for c in frame.columns if c != "timestamp"]
    targets = list(info.targets)
    season = drifts.residual_season(freq, ntr)
    ref = drifts.reference_profile(
        frame.iloc[:ntr],
        variables,
        targets,
        m.psi_bins,
        settings.validate_.profile_tolerance,
        window=rows,
        season=season,
    )
    # refresh ends: every hour (every row for hourly data and coarser; two rows for half-hourly)
    per_hour = max(int(pd.Timedelta("1h") / step), 1)
    last = min(len(frame), ntr + int(pd.Timedelta("365D") / step))
    ends = np.arange(ntr + per_hour, last + 1, per_hour)
    all_ends = np.arange(ntr + per_hour, len(frame) + 1, per_hour)  # a planted change is followed past the year
    th = verdict.thresholds(m, horizon=1, lookback=lookback)
    return {
        "name": name,
        "frame": frame,
        "ntr": ntr,
        "rows": rows,
        "season": season,
        "ref": ref,
        "ends": ends,
        "all_ends": all_ends,
        "step": step,
        "targets": targets,
        "th": th,
        "cooldown": timedelta(hours=m.cooldown_hours),
    }


def judge_at(s: dict, values: pd.DataFrame, end: int) -> dict[str, list[str]]:
    """The drift breaches of each rule at the refresh whose data end at row `end` (exclusive)."""
    rows, lag = s["rows"], s["season"]
    recent = values.iloc[end - rows : end]
    before = values.iloc[max(end - rows - lag, 0) : end - rows]
    d = drifts.drift(recent, s["ref"], None, before)
    out = {}
    for r, (f, margin) in RULES.items():
        th = s["th"] if margin is None else replace(s["th"], psi_margin=margin)
        out[r] = verdict.judge(NO_ACCURACY, f(d), None, th, {}, None).breaches
    return out


def unchanged(s: dict) -> list[dict]:
    frame, ts = s["frame"], s["frame"]["timestamp"]
    alarms = {r: 0 for r in RULES}
    triggers = {r: 0 for r in RULES}
    last_trigger: dict[str, pd.Timestamp | None] = {r: None for r in RULES}
    kinds: dict[str, dict[str, int]] = {r: {} for r in RULES}
    prev_end = None
    n = 0
    s["false"] = {r: set() for r in RULES}
    for end in s["ends"]:
        if prev_end is not None and ts.iloc[end - 1] == ts.iloc[prev_end - 1]:
            continue
        prev_end, n = end, n + 1
        at = ts.iloc[end - 1]
        for r, breaches in judge_at(s, frame, end).items():
            if not breaches:
                continue
            s["false"][r].add(int(end))
            alarms[r] += 1
            for b in breaches:
                k = b.split(" (")[0].split(" over")[0].split(" of the last")[0]
                k = " ".join(k.split()[:2]) + (" seasonal differences" if "seasonal" in b else "")
                kinds[r][k] = kinds[r].get(k, 0) + 1
            if last_trigger[r] is None or at - last_trigger[r] >= s["cooldown"]:
                triggers[r] += 1
                last_trigger[r] = at
    return [
        {
            "scenario": "unchanged",
            "rule": r,
            "evaluations": n,
            "false_alarms": alarms[r],
            "false_alarm_share": round(alarms[r] / max(n, 1), 4),
            "retrains_started": triggers[r],
            "breaches_by_kind": kinds[r],
        }
        for r in RULES
    ]


def fires_unchanged(s: dict, rule: str, end: int) -> bool:
    """Whether `rule` breaches on the unchanged series at the refresh ending at row `end` (beyond the replay
    year too: a planted change is followed until a whole window lies after it)."""
    if end <= s["ends"][-1]:
        return end in s["false"][rule]
    memo = s.setdefault("after", {})
    if end not in memo:
        memo[end] = {r: bool(b) for r, b in judge_at(s, s["frame"], end).items()}
    return memo[end][rule]


def planted(s: dict, kind: str, size: float) -> list[dict]:
    frame, ts = s["frame"], s["frame"]["timestamp"]
    ntr, ends = s["ntr"], s["ends"]
    span = ends[-1] - ntr
    onsets = [ntr + int(span * (i + 0.5) / (ONSETS + 1)) for i in range(ONSETS)]
    rng = np.random.default_rng(0)
    delays: dict[str, list[float | None]] = {r: [] for r in RULES}
    for onset in onsets:
        values = frame.copy()
        for t in s["targets"]:
            y = values[t].to_numpy(dtype=np.float64).copy()
            train = y[:ntr]
            if kind == "level":
                y[onset:] += size * np.nanstd(train)
            else:
                sd = np.nanstd(drifts.seasonal_residuals(train, s["season"]))
                y[onset:] += rng.normal(0, size * sd, len(y) - onset)
            values[t] = y
        start = ts.iloc[onset]
        found: dict[str, float | None] = {r: None for r in RULES}
        horizon = onset + s["rows"] + int(pd.Timedelta("7D") / s["step"])
        for end in s["all_ends"][(s["all_ends"] > onset) & (s["all_ends"] <= horizon)]:
            hours = (ts.iloc[end - 1] - start) / pd.Timedelta("1h")
            for r, breaches in judge_at(s, values, end).items():
                if found[r] is None and breaches and not fires_unchanged(s, r, int(end)):
                    found[r] = float(hours)
            if all(v is not None for v in found.values()):
                break
        for r in RULES:
            delays[r].append(found[r])
    out = []
    for r in RULES:
        got = [d for d in delays[r] if d is not None]
        out.append(
            {
                "scenario": f"{kind} +{size:g}sd" if kind == "level" else f"noise {size:g}x seasonal-diff sd",
                "rule": r,
                "onsets": [str(ts.iloc[o]) for o in onsets],
                "delays_h": delays[r],
                "detected": f"{len(got)}/{len(onsets)}",
                "median_delay_h": float(np.median(got)) if got else None,
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["elecdemand", "chicago"])
    ap.add_argument("--margins", nargs="*", type=float, default=[], help="also the new rule at these psi_margin")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "drift-replay.jsonl")
    args = ap.parse_args()
    RULES.update({"old": (older, None), "new": (lambda d: d, None)})
    RULES.update({f"new@{m:g}": (lambda d: d, m) for m in args.margins})
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    lines = []
    for name in args.datasets:
        s = setup(name)
        ts = s["frame"]["timestamp"]
        head = {
            "bench": "drift_replay",
            "dataset": name,
            "train": [str(ts.iloc[0]), str(ts.iloc[s["ntr"] - 1])],
            "replay": [str(ts.iloc[s["ntr"]]), str(ts.iloc[s["ends"][-1] - 1])],
            "drift_rows": s["rows"],
            "season": s["season"],
            "psi_margin": s["th"].psi_margin,
            "at": stamp,
            "machine": f"{platform.node()} {os.cpu_count()} cpu",
        }
        rows = unchanged(s)
        for kind, size in (("level", 1.0), ("level", 2.0), ("noise", 1.0), ("noise", 2.0)):
            rows += planted(s, kind, size)
        for r in rows:
            line = head | r
            lines.append(line)
            print(json.dumps(line), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
    print(
        "\n| dataset | scenario | rule | false alarms / evaluations | retrains started | detected | median delay (h) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for x in lines:
        fa = f"{x['false_alarms']} / {x['evaluations']}" if "false_alarms" in x else "-"
        print(
            f"| {x['dataset']} | {x['scenario']} | {x['rule']} | {fa} | {x.get('retrains_started', '-')} | "
            f"{x.get('detected', '-')} | {x.get('median_delay_h', '-')} |"
        )


if __name__ == "__main__":
    main()
