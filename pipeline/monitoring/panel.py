"""Monitoring a panel: every series judged as one series is (scoring.py, data/drift.py, verdict.py), then the panel.

Per series: its champion's forecasts (the rows of the long batch forecasts that are its own) scored on its actuals in
the rolling window, MASE on its own scale (the mean absolute one-step difference of its training rows, the panel
model's per-series scale: the units the champion's test MASE is pooled in), the seasonal naive on the same points,
interval coverage; drift of its latest rows, in its per-series units, against the panel's training split (the model's
reference profile is of every series' training rows in those units). Each series gets the verdict one series would
get (without the cooldown), its breaches listed; its accuracy is judged against its own test MASE (the champion's
per-series test table), or the pooled one where the run kept none.

The panel: the pooled figures over every scored point, and the share of the series judged (those with enough points,
or any drift measured) that are past a threshold. A retrain is due when that share exceeds `monitor.panel_share`
(a few series off their pattern is not a new panel), subject to the cooldown as for one series. The worst series
(by rolling MASE against the champion's test MASE) lead the verdict and `cellcast monitor NAME`.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from ..data import drift as drifts
from .champion import Champion
from .scoring import accuracy, score_points
from .verdict import Thresholds, Verdict, cooldown, judge

WORST = 5  # series the verdict and the status name


def split_forecasts(forecasts: list[tuple[str, pd.DataFrame]]) -> dict[str, list[tuple[str, pd.DataFrame]]]:
    """The long panel forecasts as each series' own list of (file, its rows)."""
    out: dict[str, list[tuple[str, pd.DataFrame]]] = {}
    for fname, fc in forecasts:
        if "series_id" not in fc.columns:
            continue
        for sid, rows in fc.groupby("series_id", sort=False):
            out.setdefault(str(sid), []).append((fname, rows.sort_values("timestamp").reset_index(drop=True)))
    return out


def series_figures(
    frame: pd.DataFrame,
    forecasts: list[tuple[str, pd.DataFrame]],
    champ: Champion,
    th: Thresholds,
    now: datetime,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict]]:
    """Each series of `frame` (the validated panel, sorted by series and time) scored and judged: a table (one row
    per series: points, mase, test_mase (its own, from the champion's per-series test scores, else the pooled one),
    ratio, naive_mase, coverage, psi_max, outside_max, past, breaches), every scored
    point (with its series_id and its scale) and each series' drift figures."""
    assert champ.panel is not None
    known = champ.panel["series"]
    by_series = split_forecasts(forecasts)
    tidx = [champ.variables.index(t) for t in champ.targets]
    rows, points, drifted = [], [], {}
    for sid, actual in frame.groupby("series_id", sort=False):
        sid = str(sid)
        if sid not in known:
            continue
        actual = actual.reset_index(drop=True)
        mean = np.asarray(known[sid]["mean"], np.float64)
        scale = np.asarray(known[sid]["scale"], np.float64)
        ts = actual["timestamp"]
        since = ts.iloc[max(len(ts) - th.window, 0)]
        pts = score_points(by_series.get(sid, []), actual, champ.targets, champ.season, since)
        tscale = {t: float(scale[j]) for t, j in zip(champ.targets, tidx)}
        acc = accuracy(pts, tscale, champ.targets)
        recent = actual.iloc[-th.drift_rows :][list(champ.variables)]
        scaled = (recent.to_numpy(np.float64) - mean) / scale
        drift = drifts.drift(pd.DataFrame(scaled, columns=champ.variables), champ.reference) if champ.reference else {}
        drifted[sid] = drift
        test = champ.series_test_mase.get(sid, champ.test_mase)  # its own test MASE, else the pooled one
        verdict = judge(acc, drift, test, th, {}, now)
        judged = acc["points"] >= th.min_points or bool(drift)
        psis = [d["psi"] for d in drift.values() if np.isfinite(d["psi"])]
        outs = [d["outside"] for d in drift.values() if np.isfinite(d["outside"])]
        rows.append(
            {
                "series_id": sid,
                "points": acc["points"],
                "mase": acc["mase"],
                "test_mase": test if test is not None else np.nan,
                "ratio": acc["mase"] / test if test and np.isfinite(acc["mase"]) else np.nan,
                "naive_mase": acc["naive_mase"],
                "coverage": acc["coverage"],
                "psi_max": max(psis) if psis else np.nan,
                "outside_max": max(outs) if outs else np.nan,
                "judged": judged,
                "past": bool(judged and verdict.breaches),
                "breaches": "; ".join(verdict.breaches),
            }
        )
        if len(pts):
            points.append(pts.assign(series_id=sid, scale=pts["target"].map(tscale)))
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(["ratio", "psi_max"], ascending=False, na_position="last", kind="stable")
    return table.reset_index(drop=True), (pd.concat(points, ignore_index=True) if points else pd.DataFrame()), drifted


def worst_drift(per_series: dict[str, dict]) -> dict[str, dict]:
    """Per variable, the drift figures of the series where its PSI is highest (that series named in `series`)."""
    out: dict[str, dict] = {}
    for sid, d in per_series.items():
        for var, row in d.items():
            if np.isfinite(row["psi"]) and (var not in out or row["psi"] > out[var]["psi"]):
                out[var] = row | {"series": sid}
    return out


def pooled_accuracy(points: pd.DataFrame, targets: list[str]) -> dict:
    """The panel's figures over every scored point, each point on its own series' scale (MASE in the units the
    champion's test MASE is pooled in)."""
    if not len(points):
        return accuracy(points, {}, targets)
    p = points.copy()
    for c in ("forecast", "actual", "naive", "lower", "upper"):
        p[c] = p[c] / p["scale"]
    return accuracy(p.drop(columns=["scale"]), {t: 1.0 for t in targets}, targets)


def panel_verdict(table: pd.DataFrame, share_limit: float, th: Thresholds, state: dict, now: datetime) -> Verdict:
    """Retrain when more than `share_limit` of the judged series is past a threshold (cooldown as for one series);
    the breaches: the share, then the worst series' own lines."""
    judged = table[table["judged"]] if len(table) else table
    if not len(judged):
        return Verdict(False, [], "no series scored or measured yet")
    past = judged[judged["past"]]
    share = len(past) / len(judged)
    if not len(past):
        return Verdict(False, [], f"within thresholds on all {len(judged)} series judged")
    head = (
        f"panel: {len(past)} of {len(judged)} series ({share:.0%}) past a threshold "
        f"(retrain above {share_limit:.0%}: monitor.panel_share)"
    )
    lines = [head] + [f"series '{r.series_id}': {r.breaches}" for r in past.head(WORST).itertuples()]
    if share <= share_limit:
        return Verdict(False, lines, f"{head}: no retrain")
    held = cooldown(state, th, now)  # the cooldown, as one series has it
    if held:
        return Verdict(False, lines, held[0], held[1])
    return Verdict(True, lines, "; ".join(lines))


def panel_summary(table: pd.DataFrame) -> dict:
    """What the report keeps of the per-series table: the counts, the share past, and the worst series' rows."""
    if not len(table):
        return {"series": 0, "judged": 0, "past": 0, "share_past": None, "worst": []}
    judged = int(table["judged"].sum())
    past = int(table["past"].sum())
    worst = table.head(WORST).replace({np.nan: None}).to_dict(orient="records")
    return {
        "series": int(len(table)),
        "judged": judged,
        "past": past,
        "share_past": past / judged if judged else None,
        "worst": worst,
    }


def status_lines(panel: dict, share_limit: float | None) -> list[str]:
    """`cellcast monitor NAME` on a panel: the share past a threshold and the worst series."""
    if not panel.get("series"):
        return ["panel: no series scored yet"]
    share = panel["share_past"]
    lines = [
        f"panel: {panel['series']} series, {panel['judged']} judged, {panel['past']} past a threshold"
        + (f" ({share:.0%}; retrain above {share_limit:.0%})" if share is not None and share_limit else ""),
        "worst series (rolling MASE / its test MASE):",
    ]

    def num(x, f=".3f"):
        return "-" if x is None else format(x, f)

    for r in panel["worst"]:
        lines.append(
            f"  {r['series_id']}: MASE {num(r['mase'])} on {r['points']} points, ratio {num(r['ratio'], '.2f')}x, "
            f"coverage {num(r['coverage'], '.1%')}, max PSI {num(r['psi_max'], '.2f')}"
            + (f"; {r['breaches']}" if r["breaches"] else "")
        )
    return lines
