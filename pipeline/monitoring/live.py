"""The live forecast log (forecasts/NAME/live/*.parquet, written by the service: docs/operations.md) scored on the
actuals that arrived since: per (model version, role) the forecasts scored, MASE on the champion's scale (the scale
of the batch monitor: a panel's series each on its own, pooled over every point as monitoring/panel.py pools),
interval coverage per level; and the champion's and the challenger's losses on the same
forecast paths, the evidence a live promotion weighs (monitoring/promote.py).

A forecast path is one version's forecast of one series from one origin (its steps 1..h). The same path can be
logged several times (a client asking twice, the writer's retries): the latest logged counts. Pairs: a path of the
champion and one of the challenger with the same series and origin, compared on the steps both forecast whose
actual has arrived. In shadow each request is answered by both, so every path has its pair; under a canary each
request is answered by one, and a pair exists only where two requests (one routed to each version) forecast the
same series from the same origin; paths without a partner are scored for their own version's figures but are no
evidence for the comparison (with none, the comparison says so and nothing is promoted).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..catalog import SERIES_ID, filled_column, is_panel, read_validated_meta, read_validated_panel, validated_paths
from ..config import Settings
from ..registry import promotion
from .scoring import QUANTILE_COLUMN

log = logging.getLogger(__name__)

KEYS = ("request_id", "logged_at", "model", "dataset", "model_version", "role", "served", "id", "origin")
REQUIRED = ("request_id", "model_version", "role", "origin", "timestamp", "step")
PATH = ["model_version", "id", "origin"]  # one forecast path
# a MASE scale: per target for one series, per (series id, target) for a panel (each series on its own scale)
Scale = Mapping[str | tuple[str, str], float]


@dataclass
class LiveLog:
    """The rows of a dataset's live log, one per (request, version, series, step), with what reading them met."""

    rows: pd.DataFrame
    files: int = 0
    damaged: list[str] = field(default_factory=list)  # "file: why", skipped
    duplicates: int = 0  # rows logged twice for one (request, version, series, step): the latest kept
    untimed: int = 0  # rows without timestamps: not scorable

    @property
    def empty(self) -> bool:
        return self.rows.empty


def _naive(s: pd.Series) -> pd.Series:
    s = pd.to_datetime(s)
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.astype("datetime64[ns]")  # one resolution on both sides of the join with the actuals


def _normal(df: pd.DataFrame) -> pd.DataFrame:
    """One file's rows with the key columns in one type (a file whose keys cannot be read so raises)."""
    df = df.copy()
    df["model_version"] = df["model_version"].astype(str)
    df["role"] = df["role"].astype(str)
    ids = df["id"] if "id" in df.columns else pd.Series(None, index=df.index, dtype=object)
    df["id"] = ids.astype(object).where(ids.notna(), "").astype(str)
    df["origin"], df["timestamp"] = _naive(df["origin"]), _naive(df["timestamp"])
    df["step"] = df["step"].astype(int)
    if "logged_at" in df.columns:
        df["logged_at"] = pd.to_datetime(df["logged_at"], utc=True)
    return df


def _read_files(files: list[Path]) -> tuple[list[pd.DataFrame], list[str], bool]:
    """The live files' rows, the damaged files (name: why), and whether any file vanished before it was read."""
    frames, damaged, vanished = [], [], False
    for f in files:
        try:
            df = pd.read_parquet(f)
            missing = [c for c in REQUIRED if c not in df.columns]
            if missing:
                damaged.append(f"{f.name}: no column {', '.join(missing)}")
                continue
            frames.append(_normal(df))
        except FileNotFoundError:
            vanished = True
        except Exception as e:  # noqa: BLE001 - a damaged file is skipped, and said so
            damaged.append(f"{f.name}: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__}")
    return frames, damaged, vanished


def read_live(folder: Path) -> LiveLog:
    """Every file of a live folder (files being written have a temporary name and are not read); a file that is
    not readable, lacks a column the contract requires or holds keys of another type is skipped with a warning."""
    folder = Path(folder)
    for _ in range(3):  # a file that vanished was folded into its day's file meanwhile (serving/livelog.tidy): reread
        files = sorted(f for f in folder.glob("*.parquet") if not f.name.startswith(".")) if folder.is_dir() else []
        frames, damaged, vanished = _read_files(files)
        if not vanished:
            break
    for d in damaged:
        log.warning("%s/%s: not readable as a live forecast log: skipped", folder, d)
    if not frames:
        return LiveLog(pd.DataFrame(columns=list(REQUIRED)), len(files), damaged)
    rows = pd.concat(frames, ignore_index=True)
    if "logged_at" in rows.columns:
        rows = rows.sort_values("logged_at", kind="stable")  # the latest logged last: it is the one kept
    n = len(rows)
    rows = rows.drop_duplicates(["request_id", "model_version", "id", "step"], keep="last")
    dups = n - len(rows)
    untimed = int((rows["timestamp"].isna() | rows["origin"].isna()).sum())
    rows = rows[rows["timestamp"].notna() & rows["origin"].notna()].reset_index(drop=True)
    return LiveLog(rows, len(files), damaged, dups, untimed)


def target_columns(rows: pd.DataFrame) -> list[str]:
    """The point forecast columns of a live log: every column but the keys, the step's time and the quantiles."""
    fixed = {*KEYS, "timestamp", "step"}
    return [str(c) for c in rows.columns if c not in fixed and not QUANTILE_COLUMN.match(str(c))]


def read_actuals(settings: Settings, targets: list[str]) -> pd.DataFrame:
    """The validated rows the live forecasts are scored on: `id` (the panel's series id; "" for one series),
    `timestamp`, the targets and their gap-filled flags."""
    meta = read_validated_meta(settings)
    filled = [filled_column(t) for t in targets]
    if is_panel(meta):
        frame, _ = read_validated_panel(settings)
        frame = frame.rename(columns={SERIES_ID: "id"})
    else:
        frame = pd.read_parquet(validated_paths(settings)[0])
        frame["id"] = ""
    keep = ["id", "timestamp", *[c for c in [*targets, *filled] if c in frame.columns]]
    out = frame[keep].copy()
    out["id"] = out["id"].astype(str)
    out["timestamp"] = _naive(out["timestamp"])
    return out.sort_values(["id", "timestamp"]).reset_index(drop=True)


def interval_levels(columns, target: str) -> dict[str, tuple[str, str]]:
    """The central intervals the quantile columns of `target` give: {"90": (lower column, upper column)} for
    every pair q, 1 - q (q < 0.5)."""
    qs = {}
    for c in columns:
        m = QUANTILE_COLUMN.match(str(c))
        if m and m["target"] == target:
            qs[round(float(m["q"]), 6)] = str(c)
    out = {}
    for q, lo in sorted(qs.items()):
        hi = qs.get(round(1 - q, 6))
        if q < 0.5 and hi is not None:
            out[f"{100 * (1 - 2 * q):g}"] = (lo, hi)
    return out


POINT_COLUMNS = ["model_version", "role", "id", "origin", "timestamp", "step", "target", "forecast", "actual"]


def score_live(rows: pd.DataFrame, actuals: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    """One row per (version, role, series, origin, step, target) whose actual has arrived (an observed value: not
    missing, not filled by the gap policy): the forecast, the actual, and `inside:<level>` (1 inside the central
    interval, 0 outside, missing without one) per interval the quantile columns give. A path logged more than
    once counts once (the latest)."""
    if rows.empty:
        return pd.DataFrame(columns=POINT_COLUMNS)
    rows = rows.drop_duplicates(["model_version", "role", "id", "origin", "step"], keep="last")
    base = ["model_version", "role", "id", "origin", "timestamp", "step"]
    parts = []
    for t in targets:
        if t not in rows.columns or t not in actuals.columns:
            continue
        y = actuals[t].to_numpy(dtype=np.float64)
        observed = np.isfinite(y)
        if filled_column(t) in actuals.columns:
            observed &= ~actuals[filled_column(t)].fillna(False).to_numpy(dtype=bool)
        arrived = actuals.loc[observed, ["id", "timestamp"]].assign(actual=y[observed])
        levels = interval_levels(rows.columns, t)
        cols = [*base, t, *[c for pair in levels.values() for c in pair]]
        m = rows[cols].merge(arrived, on=["id", "timestamp"], how="inner")
        if m.empty:
            continue
        part = m[base].assign(
            target=t, forecast=m[t].to_numpy(dtype=np.float64), actual=m["actual"].to_numpy(dtype=np.float64)
        )
        for name, (lo, hi) in levels.items():
            lower, upper = m[lo].to_numpy(dtype=np.float64), m[hi].to_numpy(dtype=np.float64)
            inside = ((part["actual"] >= lower) & (part["actual"] <= upper)).to_numpy(dtype=np.float64)
            part[f"inside:{name}"] = np.where(np.isfinite(lower) & np.isfinite(upper), inside, np.nan)
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=POINT_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def point_scales(points: pd.DataFrame, scale: Scale) -> np.ndarray:
    """Each point's scale: its series' own for its target when `scale` has one, else the target's, else 1."""
    ids = points["id"].astype(str) if "id" in points.columns else pd.Series("", index=points.index)
    return np.array(
        [scale.get((i, t)) or scale.get(t) or 1.0 for i, t in zip(ids, points["target"].astype(str), strict=True)],
        dtype=np.float64,
    )


def scaled_errors(points: pd.DataFrame, scale: Scale) -> np.ndarray:
    f, a = points["forecast"].to_numpy(dtype=np.float64), points["actual"].to_numpy(dtype=np.float64)
    return np.abs(f - a) / point_scales(points, scale)


def _mae(d: pd.Series) -> float:
    x = d.to_numpy(dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) and x.mean() > 1e-12 else 1.0


def data_scale(actuals: pd.DataFrame, targets: list[str], before) -> dict:
    """The in-sample one-step naive MAE of each target on the rows before `before`: the scale for a champion that
    records none. One series: {target: MAE}; a panel: {(series id, target): MAE}, each series on its own (one
    pooled scale would let the largest series outweigh the rest)."""
    rows = actuals[actuals["timestamp"] < before] if before is not None else actuals
    panel = bool((actuals["id"].astype(str) != "").any())
    out: dict = {}
    for t in targets:
        if t not in rows.columns:
            continue
        d = rows.groupby("id", sort=False)[t].diff().abs()
        if not panel:
            out[t] = _mae(d)
            continue
        for sid, g in d.groupby(rows["id"].astype(str), sort=False):
            out[(str(sid), t)] = _mae(g)
    return out


def champion_scale(metadata: Mapping) -> dict | None:
    """The MASE scale a champion records in its ONNX metadata: a panel's each series' own (`panel.series.{id}.scale`
    at each target, the scale its batch monitor pools in), else `reference.mase_scale` per target; None: none."""
    panel = metadata.get("panel")
    if panel:
        variables, targets = list(metadata.get("variables") or []), list(metadata.get("targets") or [])
        out = {
            (str(sid), t): float(s["scale"][variables.index(t)])
            for sid, s in (panel.get("series") or {}).items()
            if s.get("scale") is not None
            for t in targets
            if t in variables
        }
        return out or None
    return (metadata.get("reference") or {}).get("mase_scale") or None


def roles(rows: pd.DataFrame) -> dict[str, str]:
    """The version each role was last logged with: {"champion": "3", "challenger": "4"}."""
    return {str(r): str(g["model_version"].iloc[-1]) for r, g in rows.groupby("role", sort=False)}


def summary(points: pd.DataFrame, scale: Scale, since=None) -> list[dict]:
    """Per (version, role): forecast paths scored, points, MASE on all of them and on the rolling window (points at
    or after `since`), coverage per interval level. Champion first, then challenger, then the rest."""
    if points.empty:
        return []
    p = points.assign(err=scaled_errors(points, scale))
    order = {"champion": 0, "challenger": 1}
    out = []
    for (version, role), g in p.groupby(["model_version", "role"], sort=False):
        recent = g[g["timestamp"] >= since] if since is not None else g
        out.append(
            {
                "version": str(version),
                "role": str(role),
                "forecasts": int(len(g.drop_duplicates(["id", "origin"]))),
                "points": int(len(g)),
                "mase": float(g["err"].mean()),
                "rolling_mase": float(recent["err"].mean()) if len(recent) else float("nan"),
                "rolling_points": int(len(recent)),
                "coverage": {
                    c.split(":", 1)[1]: float(g[c].mean())
                    for c in g.columns
                    if c.startswith("inside:") and g[c].notna().any()
                },
            }
        )
    return sorted(out, key=lambda r: (order.get(r["role"], 2), -int(r["version"]) if r["version"].isdigit() else 0))


def pair_paths(points: pd.DataFrame, champion: str, challenger: str, scale: Scale) -> pd.DataFrame:
    """The champion's and the challenger's loss (mean scaled absolute error) per forecast path both made (same
    series, same origin), on the steps and targets both forecast whose actual arrived; sorted by origin."""
    cols = ["id", "origin", "champion", "challenger", "points"]
    if points.empty:
        return pd.DataFrame(columns=cols)
    p = points.assign(loss=scaled_errors(points, scale))
    key = ["id", "origin", "step", "target"]
    mine = {
        v: p[p["model_version"] == v].drop_duplicates(key, keep="last")[[*key, "loss"]]
        for v in (str(champion), str(challenger))
    }
    m = mine[str(champion)].merge(mine[str(challenger)], on=key, suffixes=("_champion", "_challenger"))
    if m.empty:
        return pd.DataFrame(columns=cols)
    per = (
        m.groupby(["id", "origin"])
        .agg(champion=("loss_champion", "mean"), challenger=("loss_challenger", "mean"), points=("step", "size"))
        .reset_index()
    )
    return per.sort_values(["origin", "id"]).reset_index(drop=True)[cols]


def comparison(pairs: pd.DataFrame, champion: str, step: pd.Timedelta | None) -> tuple[promotion.Comparison, dict]:
    """The evidence for the Diebold-Mariano test: one loss differential per origin (the series of a panel forecast
    from one origin share its shocks: their mean is one observation), and the overlap of consecutive paths as the
    test's horizon: paths `step`s apart that span h steps share about h / gap targets (h at consecutive origins,
    as in the training flow's test; 1 when the origins lie a horizon or more apart). And the live window."""
    by_origin = pairs.groupby("origin")[["challenger", "champion"]].mean().sort_index()
    origins = by_origin.index
    h = int(pairs["points"].max()) if len(pairs) else 1
    overlap = 1
    if len(origins) > 1 and step is not None and step > pd.Timedelta(0):
        gap = float(np.median(np.diff(origins.to_numpy()) / step.to_timedelta64()))
        overlap = int(min(h, max(1, math.ceil(h / gap)))) if gap > 0 else h
    comp = promotion.Comparison(
        f"champion v{champion}", by_origin["challenger"].to_numpy(), by_origin["champion"].to_numpy(), horizon=overlap
    )
    window = {
        "paired": int(len(pairs)),
        "origins": int(len(origins)),
        "first_origin": str(origins.min()) if len(origins) else "",
        "last_origin": str(origins.max()) if len(origins) else "",
        "overlap": overlap,
    }
    return comp, window


def grid_step(actuals: pd.DataFrame) -> pd.Timedelta | None:
    """The series' step: the most common gap between consecutive timestamps of a series."""
    d = actuals.groupby("id", sort=False)["timestamp"].diff().dropna()
    return pd.Timedelta(d.mode().iloc[0]) if len(d) else None
