"""Is the champion still good? The monitor scores the forecasts written earlier (forecasts/NAME/*.parquet)
against the actuals that have arrived since, measures how far recent inputs moved from the training split,
and judges whether a retrain is due. Plain functions and files; the scheduled forecast flow calls
`evaluate` after each refresh and starts the retrain deployment when the verdict says so.

Accuracy, on the rolling window (the points whose time lies in the latest `monitor.window` steps), for the
champion's own forecasts only (a new champion starts afresh):
- MASE: |forecast - actual| scaled by the training split's in-sample one-step naive MAE, the scale of the
  champion's test MASE (recorded with the model), so `mase / test_mase` compares like with like;
- the seasonal naive forecast from the same origins on the same points (`naive_mase`, `relative_mase`);
- bias (forecast - actual: positive = over-forecast), per target in its units and scaled;
- interval coverage when the forecast has quantile columns (`<target>_q0.1`, `<target>_q0.9`: the
  outermost pair around the median).
Drift, on the latest `monitor.drift_rows` rows: PSI per variable against the training split's bins, and
the share of values outside the trained bounds (data/drift.py).

Files under reports/NAME/monitoring/ (catalog.monitoring_dir): points.parquet, scores.parquet, state.json;
MLflow: the long-lived run `monitor-NAME` of the dataset's experiment, one step per evaluation.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ..catalog import forecasts_dir, monitoring_dir, window_paths
from ..config import MonitorConfig, Settings
from ..data import drift as drifts
from ..errors import NotFoundError
from ..files import write_json, write_parquet

log = logging.getLogger(__name__)

QUANTILE_COLUMN = re.compile(r"^(?P<target>.+)_q(?P<q>0?\.\d+)$")
MAX_TRIGGERS_KEPT = 50


# ---------------------------------------------------------------- what is monitored


@dataclass
class Thresholds:
    """params.yaml `monitor` with 'auto' resolved for one model."""

    mase_ratio: float | None
    min_points: int
    window: int
    psi: float | None
    psi_bins: int
    drift_rows: int
    outside_share: float | None
    cooldown_hours: float


def thresholds(cfg: MonitorConfig, horizon: int, lookback: int) -> Thresholds:
    return Thresholds(
        mase_ratio=cfg.mase_ratio,
        min_points=horizon if cfg.min_points == "auto" else cfg.min_points,
        window=2 * horizon if cfg.window == "auto" else cfg.window,
        psi=cfg.psi,
        psi_bins=cfg.psi_bins,
        drift_rows=drifts.window_rows(cfg.drift_rows, lookback, cfg.psi_bins),
        outside_share=cfg.outside_share,
        cooldown_hours=cfg.cooldown_hours,
    )


@dataclass
class Champion:
    """What the monitor needs of the serving model: from its ONNX metadata and its registry tags."""

    version: int
    targets: list[str]
    variables: list[str]
    lookback: int
    horizon: int
    test_mase: float | None  # its MASE on the test split, tagged at registration
    season: int  # the seasonal naive it is compared with (its strongest baseline)
    reference: dict | None  # data/drift.reference_profile of its training rows
    reference_source: str
    bounds: dict[str, list[float]]  # plausible range per variable, profiled on its training rows


def _season(tags: dict, metadata: dict) -> int:
    name = tags.get("promotion.baseline_name") or ""
    if name == "naive":
        return 1
    if name.startswith("seasonal_naive_") and name.rsplit("_", 1)[1].isdigit():
        return int(name.rsplit("_", 1)[1])
    anchor = (metadata.get("spec") or {}).get("anchor_season")
    if anchor:
        return int(anchor)
    from ..data.frequency import seasons_for

    seasons = seasons_for(metadata["freq"]) if metadata.get("freq") else []
    return seasons[0] if seasons else 1


def _float(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def load_champion(name: str, settings: Settings, frame: pd.DataFrame) -> Champion:
    """The registry's champion of `name`, and its training reference (from the model; for a model trained
    before models carried one, recomputed from the rows it was trained on when those are known)."""
    from ..engine.inference import OnnxForecaster
    from ..registry import tracking

    path, info = tracking.download_model(settings.model_name, "champion")  # NoChampionError: one line
    engine = OnnxForecaster.from_path(path, device="cpu")
    md = engine.metadata
    reference, source = md.get("reference"), "the model's metadata"
    if not reference:
        reference, source = _rebuilt_reference(name, settings, frame, engine, md, info.tags)
    test = _float(info.tags.get("test_mase")) or _float(info.tags.get("promotion.candidate_mase"))
    bounds = md.get("bounds") or (reference or {}).get("bounds") or {}
    return Champion(
        version=int(info.version),
        targets=list(engine.targets),
        variables=list(engine.variables),
        lookback=int(engine.lookback),
        horizon=int(engine.horizon),
        test_mase=test,
        season=_season(info.tags, md),
        reference=reference,
        reference_source=source,
        bounds={k: list(v) for k, v in bounds.items()},
    )


def _rebuilt_reference(name, settings, frame, engine, md, tags) -> tuple[dict | None, str]:
    end = ((md.get("split_times") or {}).get("train") or [None, None])[1] or tags.get("train_end")
    source = "its recorded training split"
    if end is None:
        # the window set on disk describes this model's rows when it was cut from the same data
        js = window_paths(name, settings)[1]
        if js.is_file():
            wm = json.loads(js.read_text())
            if md.get("data_md5") and wm.get("data_md5") == md.get("data_md5"):
                end, source = wm["split_times"]["train"][1], "the window set it was trained from"
    if end is None:
        return None, "none: the model records no training split"
    train = frame[frame["timestamp"] <= pd.Timestamp(end)]
    m = settings.monitor
    ref = drifts.reference_profile(
        train,
        list(engine.variables),
        list(engine.targets),
        m.psi_bins,
        settings.validate_.profile_tolerance,
        window=drifts.window_rows(m.drift_rows, engine.lookback, m.psi_bins),
    )
    return ref, f"recomputed from {source} (rows up to {end})"


# ---------------------------------------------------------------- accuracy


def read_forecasts(folder: Path, version: int, since: pd.Timestamp) -> list[tuple[str, pd.DataFrame]]:
    """The forecasts of model `version` reaching into the window (time >= since), newest first, one per
    origin (a rerun on unchanged data forecasts the same steps again: the newest counts)."""
    files = sorted(Path(folder).glob("*.parquet"), reverse=True)  # UTC stamps: newest first
    out, origins = [], set()
    for f in files:
        try:
            df = pd.read_parquet(f)
        except Exception as e:  # noqa: BLE001 - a damaged file is skipped, and said so
            log.warning("%s: not readable as a forecast (%s): skipped", f, str(e).splitlines()[0][:120])
            continue
        if df.empty or "timestamp" not in df.columns:
            continue
        if df["timestamp"].max() < since:
            break  # written before every forecast still in the window
        if "model_version" not in df.columns or str(df["model_version"].iloc[0]) != str(version):
            continue
        first = df["timestamp"].min()
        if first in origins:
            continue
        origins.add(first)
        out.append((f.name, df.sort_values("timestamp").reset_index(drop=True)))
    return out


def quantile_columns(frame: pd.DataFrame, target: str) -> tuple[str | None, str | None, float]:
    """The outermost quantile pair of `target` around the median, and its nominal coverage."""
    qs = {}
    for c in frame.columns:
        m = QUANTILE_COLUMN.match(str(c))
        if m and m["target"] == target:
            qs[float(m["q"])] = c
    lo = [q for q in qs if q < 0.5]
    hi = [q for q in qs if q > 0.5]
    if not lo or not hi:
        return None, None, float("nan")
    return qs[min(lo)], qs[max(hi)], max(hi) - min(lo)


def score_points(
    forecasts: list[tuple[str, pd.DataFrame]],
    actuals: pd.DataFrame,
    targets: list[str],
    season: int,
    since: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """One row per (forecast, step, target) whose actual has arrived: the forecast, the actual, the seasonal
    naive forecast of the same origin (the latest value `season` steps back that was observed then), the
    interval bounds when the forecast has quantiles. `actuals`: the validated frame, on its regular grid."""
    ts = actuals["timestamp"].to_numpy()
    cols = []
    for fname, fc in forecasts:
        stamps = fc["timestamp"].to_numpy()
        pos = int(np.searchsorted(ts, stamps[0]))
        if pos == 0 or pos >= len(ts) or ts[pos] != stamps[0]:
            continue  # not arrived yet, or not on the series' grid
        h = np.arange(len(stamps))
        rows = pos + h
        ok = rows < len(ts)
        ok[ok] = ts[rows[ok]] == stamps[ok]
        if since is not None:
            ok &= stamps >= np.datetime64(since)
        if not ok.any():
            continue
        src = rows - season * (h // season + 1)  # always before `pos`: observed at forecast time
        for t in targets:
            if t not in fc.columns or t not in actuals.columns:
                continue
            y = actuals[t].to_numpy(dtype=np.float64)
            observed = np.isfinite(y)
            filled = f"filled:{t}"  # a cell the gap policy filled is no observation
            if filled in actuals.columns:
                observed &= ~actuals[filled].fillna(False).to_numpy(dtype=bool)
            keep = ok.copy()
            keep[ok] = observed[rows[ok]]
            if not keep.any():
                continue
            lo_col, hi_col, nominal = quantile_columns(fc, t)
            k = np.flatnonzero(keep)
            naive = np.where(src[k] >= 0, y[np.clip(src[k], 0, None)], np.nan)
            cols.append(
                pd.DataFrame(
                    {
                        "forecast_file": fname,
                        "origin": ts[pos - 1],
                        "timestamp": stamps[k],
                        "step": h[k] + 1,
                        "target": t,
                        "forecast": fc[t].to_numpy(dtype=np.float64)[k],
                        "actual": y[rows[k]],
                        "naive": naive,
                        "lower": fc[lo_col].to_numpy(dtype=np.float64)[k] if lo_col else np.nan,
                        "upper": fc[hi_col].to_numpy(dtype=np.float64)[k] if hi_col else np.nan,
                        "nominal": nominal,
                        "model_version": str(fc["model_version"].iloc[0]) if "model_version" in fc.columns else "",
                    }
                )
            )
    if not cols:
        return pd.DataFrame(
            columns=[
                "forecast_file",
                "origin",
                "timestamp",
                "step",
                "target",
                "forecast",
                "actual",
                "naive",
                "lower",
                "upper",
                "nominal",
                "model_version",
            ]
        )
    return pd.concat(cols, ignore_index=True)


def accuracy(points: pd.DataFrame, scale: dict[str, float], targets: list[str]) -> dict:
    """The window's figures: MASE (on the champion's test scale), the seasonal naive's on the same points,
    bias, interval coverage. Points whose naive forecast is missing (a break) are left out of both."""
    p = points[np.isfinite(points["naive"].astype(float))] if len(points) else points
    out = {
        "points": int(len(p)),
        "forecasts": int(p["forecast_file"].nunique()) if len(p) else 0,
        "mase": float("nan"),
        "naive_mase": float("nan"),
        "relative_mase": float("nan"),
        "bias_scaled": float("nan"),
        "coverage": float("nan"),
        "coverage_nominal": float("nan"),
    }
    for t in targets:
        out[f"bias.{t}"] = float("nan")
    if not len(p):
        return out
    s = p["target"].map(lambda t: scale.get(t, 1.0)).to_numpy(dtype=np.float64)
    err = (p["forecast"] - p["actual"]).to_numpy(dtype=np.float64)
    naive_err = (p["naive"] - p["actual"]).to_numpy(dtype=np.float64)
    out["mase"] = float(np.mean(np.abs(err) / s))
    out["naive_mase"] = float(np.mean(np.abs(naive_err) / s))
    out["relative_mase"] = out["mase"] / out["naive_mase"] if out["naive_mase"] > 0 else float("nan")
    out["bias_scaled"] = float(np.mean(err / s))
    for t in targets:
        sel = (p["target"] == t).to_numpy()
        if sel.any():
            out[f"bias.{t}"] = float(err[sel].mean())
    band = p[np.isfinite(p["lower"].astype(float)) & np.isfinite(p["upper"].astype(float))]
    if len(band):
        inside = (band["actual"] >= band["lower"]) & (band["actual"] <= band["upper"])
        out["coverage"] = float(inside.mean())
        out["coverage_nominal"] = float(band["nominal"].mean())
    return out


# ---------------------------------------------------------------- the verdict


@dataclass
class Verdict:
    retrain: bool
    breaches: list[str]  # every threshold crossed now, one line each
    reason: str  # why a retrain is asked for, or why not
    cooldown_until: str | None = None


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse(t: str) -> datetime:
    return datetime.fromisoformat(t.replace("Z", "+00:00"))


def psi_limit(th: Thresholds, d: dict) -> float | None:
    """The PSI above which a variable has drifted: the stated threshold, and no less than the training
    split's own windows of as many rows reach (a seasonal series strays that far from itself)."""
    if not th.psi:
        return None
    return max(th.psi, d.get("psi_normal") or 0.0)


def judge(
    acc: dict, drift: dict[str, dict], test_mase: float | None, th: Thresholds, state: dict, now: datetime
) -> Verdict:
    """Retrain when accuracy or drift crosses its threshold, unless a retrain was triggered within the
    cooldown (a storm of retrains would not make the next one better)."""
    breaches = []
    if th.mase_ratio and test_mase and acc["points"] >= th.min_points and np.isfinite(acc["mase"]):
        ratio = acc["mase"] / test_mase
        if ratio > th.mase_ratio:
            breaches.append(
                f"accuracy: rolling MASE {acc['mase']:.3f} on {acc['points']} points is {ratio:.2f}x "
                f"the champion's test MASE {test_mase:.3f} (threshold {th.mase_ratio:g}x)"
            )
    for var, d in drift.items():
        limit = psi_limit(th, d)
        if limit is not None and np.isfinite(d["psi"]) and d["psi"] > limit:
            normal = d.get("psi_normal")
            breaches.append(
                f"drift: {var} PSI {d['psi']:.2f} over the last {d['n']} rows vs the training split "
                f"(threshold {th.psi:g}"
                + (f"; training windows of as many rows reach {normal:.2f})" if normal is not None else ")")
            )
        if th.outside_share and np.isfinite(d["outside"]) and d["outside"] > th.outside_share:
            lo, hi = d["bounds"]
            breaches.append(
                f"drift: {d['outside']:.1%} of the last {d['n']} {var} values lie outside the trained "
                f"bounds [{lo:.4g}, {hi:.4g}] (threshold {th.outside_share:.1%})"
            )
    if not breaches:
        return Verdict(False, [], "within thresholds")
    last = (state.get("last_trigger") or {}).get("at")
    if last:
        until = _parse(last) + timedelta(hours=th.cooldown_hours)
        if now < until:
            return Verdict(False, breaches, f"cooldown until {_iso(until)} (retrain triggered at {last})", _iso(until))
    return Verdict(True, breaches, "; ".join(breaches))


# ---------------------------------------------------------------- one evaluation


@dataclass
class MonitorReport:
    dataset: str
    model_name: str
    version: int
    evaluation: int  # the step of this evaluation (1, 2, ...)
    at: str  # when it ran (UTC)
    data_until: str  # the latest actual
    window_start: str
    accuracy: dict
    test_mase: float | None
    mase_ratio: float | None
    season: int
    drift: dict[str, dict]
    reference: str  # where the training reference came from
    thresholds: dict
    verdict: Verdict
    run_id: str | None = None
    files: dict = field(default_factory=dict)

    def figures(self) -> dict:
        """Flat numbers: the MLflow metrics and a scores.parquet row."""
        out = {k: v for k, v in self.accuracy.items() if isinstance(v, (int, float))}
        out["test_mase"] = self.test_mase if self.test_mase is not None else float("nan")
        out["mase_ratio"] = self.mase_ratio if self.mase_ratio is not None else float("nan")
        for var, d in self.drift.items():
            out[f"psi.{var}"], out[f"outside.{var}"] = d["psi"], d["outside"]
        psis = [d["psi"] for d in self.drift.values() if np.isfinite(d["psi"])]
        outs = [d["outside"] for d in self.drift.values() if np.isfinite(d["outside"])]
        out["psi_max"] = max(psis) if psis else float("nan")
        out["outside_max"] = max(outs) if outs else float("nan")
        out["breaches"] = len(self.verdict.breaches)
        out["retrain"] = int(self.verdict.retrain)
        out["champion_version"] = self.version
        return out


def state_path(name: str, settings: Settings) -> Path:
    return monitoring_dir(name, settings) / "state.json"


def read_state(name: str, settings: Settings) -> dict:
    p = state_path(name, settings)
    return json.loads(p.read_text()) if p.is_file() else {}


def evaluate(name: str, settings: Settings, now: datetime | None = None, log_to_mlflow: bool = True) -> MonitorReport:
    """Score the champion's forecasts on the actuals that arrived, measure drift, judge; write the files
    and log the evaluation to the monitoring run. Raises NoChampionError when there is nothing to monitor."""
    from ..catalog import read_validated

    now = now or datetime.now(UTC)
    frame, _ = read_validated(name, settings)
    frame = frame.sort_values("timestamp").reset_index(drop=True)
    champ = load_champion(name, settings, frame)
    th = thresholds(settings.monitor, champ.horizon, champ.lookback)
    ts = frame["timestamp"]
    since = ts.iloc[max(len(ts) - th.window, 0)]
    forecasts = read_forecasts(forecasts_dir(name, settings), champ.version, since)
    points = score_points(forecasts, frame, champ.targets, champ.season, since)
    scale = (champ.reference or {}).get("mase_scale") or _scale_before(frame, champ.targets, since)
    acc = accuracy(points, scale, champ.targets)
    recent = frame.iloc[-th.drift_rows :]
    drift = drifts.drift(recent, champ.reference, champ.bounds) if champ.reference else {}
    state = read_state(name, settings)
    verdict = judge(acc, drift, champ.test_mase, th, state, now)
    step = int(state.get("evaluations", 0)) + 1
    rep = MonitorReport(
        dataset=name,
        model_name=settings.model_name,
        version=champ.version,
        evaluation=step,
        at=_iso(now),
        data_until=str(ts.iloc[-1]),
        window_start=str(since),
        accuracy=acc,
        test_mase=champ.test_mase,
        mase_ratio=(acc["mase"] / champ.test_mase if champ.test_mase and np.isfinite(acc["mase"]) else None),
        season=champ.season,
        drift=drift,
        reference=champ.reference_source,
        thresholds=asdict(th),
        verdict=verdict,
    )
    folder = monitoring_dir(name, settings)
    rep.files["points"] = str(write_parquet(points, folder / "points.parquet"))
    rep.files["scores"] = str(_append_scores(rep, folder / "scores.parquet"))
    if log_to_mlflow:
        rep.run_id = _log(rep)
    state.update(
        {
            "dataset": name,
            "evaluations": step,
            "last": _jsonable(asdict(rep)),
            "monitoring_run_id": rep.run_id or state.get("monitoring_run_id"),
        }
    )
    write_json(state_path(name, settings), state)
    log.info("%s v%s: %s", settings.model_name, champ.version, _summary(rep))
    return rep


def _scale_before(frame: pd.DataFrame, targets: list[str], since) -> dict[str, float]:
    # a model with no recorded reference: the rows before the window stand in for its training rows
    before = frame[frame["timestamp"] < since]
    out = {}
    for t in targets:
        d = np.abs(np.diff(before[t].to_numpy(dtype=np.float64)))
        d = d[np.isfinite(d)]
        out[t] = float(d.mean()) if len(d) and d.mean() > 1e-12 else 1.0
    return out


def _append_scores(rep: MonitorReport, path: Path) -> Path:
    row = {
        "evaluation": rep.evaluation,
        "at": pd.Timestamp(rep.at),
        "data_until": pd.Timestamp(rep.data_until),
        "window_start": pd.Timestamp(rep.window_start),
        **rep.figures(),
        "reason": rep.verdict.reason,
        "breach_list": "; ".join(rep.verdict.breaches),
    }
    old = pd.read_parquet(path) if path.is_file() else None
    new = pd.DataFrame([row])
    return write_parquet(new if old is None or old.empty else pd.concat([old, new], ignore_index=True), path)


def _log(rep: MonitorReport) -> str:
    from ..registry import tracking

    run_id = tracking.monitoring_run(rep.dataset)
    ms = int(_parse(rep.at).timestamp() * 1000)
    tracking.log_monitoring(
        run_id,
        {_metric_key(k): v for k, v in rep.figures().items()},
        step=rep.evaluation,
        timestamp_ms=ms,
        tags={
            "champion_version": rep.version,
            "last_evaluation": rep.at,
            "data_until": rep.data_until,
            "verdict": rep.verdict.reason[:4000],
            "reference": rep.reference,
            **{f"threshold.{k}": v for k, v in rep.thresholds.items()},
        },
    )
    return run_id


def _metric_key(k: str) -> str:
    # MLflow keys: letters, digits, _ - . / and spaces
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", k)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _summary(rep: MonitorReport) -> str:
    a = rep.accuracy
    acc = (
        f"MASE {a['mase']:.3f} on {a['points']} points" + (f" ({rep.mase_ratio:.2f}x test)" if rep.mase_ratio else "")
        if a["points"]
        else "no forecast scored yet"
    )
    psi = max((d["psi"] for d in rep.drift.values() if np.isfinite(d["psi"])), default=float("nan"))
    return f"{acc}; max PSI {psi:.2f}; {'RETRAIN: ' if rep.verdict.retrain else ''}{rep.verdict.reason}"


# ---------------------------------------------------------------- triggers


def record_trigger(
    name: str,
    settings: Settings,
    report: MonitorReport,
    flow_run: dict,
    now: datetime | None = None,
    log_to_mlflow: bool = True,
) -> dict:
    """A retrain was started (flow_run: id, name, deployment): the cooldown starts now; kept in state.json
    and on the monitoring run."""
    now = now or datetime.now(UTC)
    trig = {
        "at": _iso(now),
        "reason": report.verdict.reason,
        "breaches": report.verdict.breaches,
        "champion_version": report.version,
        "evaluation": report.evaluation,
        **flow_run,
    }
    state = read_state(name, settings)
    state["last_trigger"] = trig
    state["triggers"] = (state.get("triggers") or [])[-(MAX_TRIGGERS_KEPT - 1) :] + [trig]
    state.pop("last_trigger_error", None)
    write_json(state_path(name, settings), state)
    if log_to_mlflow and report.run_id:
        from ..registry import tracking

        tracking.log_monitoring(
            report.run_id,
            {"retrain_triggered": 1},
            step=report.evaluation,
            timestamp_ms=int(now.timestamp() * 1000),
            tags={
                "trigger.at": trig["at"],
                "trigger.reason": trig["reason"][:4000],
                "trigger.flow_run_id": flow_run.get("flow_run_id", ""),
                "trigger.flow_run_name": flow_run.get("flow_run_name", ""),
                "trigger.deployment": flow_run.get("deployment", ""),
                "trigger.count": len(state["triggers"]),
            },
        )
    return trig


def record_trigger_error(
    name: str, settings: Settings, report: MonitorReport, error: str, now: datetime | None = None
) -> None:
    """A retrain was due but could not be started (no such deployment, no server): said in state.json; no
    cooldown starts, so the next evaluation tries again."""
    state = read_state(name, settings)
    state["last_trigger_error"] = {
        "at": _iso(now or datetime.now(UTC)),
        "reason": report.verdict.reason,
        "error": error,
    }
    write_json(state_path(name, settings), state)


# ---------------------------------------------------------------- `cellcast monitor NAME`


def status(name: str, settings: Settings, now: datetime | None = None) -> str:
    """The monitor's current state as text: last scores, drift, thresholds, last trigger, cooldown."""
    state = read_state(name, settings)
    last = state.get("last")
    if not last:
        raise NotFoundError(
            f"{state_path(name, settings)}: '{name}' has not been monitored yet; the scheduled "
            f"forecast flow (refresh) monitors it after each refresh"
        )
    now = now or datetime.now(UTC)
    a, th, v = last["accuracy"], last["thresholds"], last["verdict"]
    num = lambda x, f=".3f": "-" if x is None else format(x, f)  # noqa: E731
    lines = [
        f"{last['model_name']}: champion v{last['version']}, evaluation {last['evaluation']} at {last['at']} "
        f"(data until {last['data_until']})",
        f"accuracy: window from {last['window_start']}: {a['points']} points from {a['forecasts']} forecast(s)"
        f" (judged from {th['min_points']})",
    ]
    if a["points"]:
        lines.append(
            f"  MASE {num(a['mase'])}  champion's test MASE {num(last['test_mase'])}  ratio "
            f"{num(last['mase_ratio'], '.2f')}x  (threshold {th['mase_ratio']}x)"
        )
        lines.append(
            f"  seasonal naive ({last['season']}) on the same points: MASE {num(a['naive_mase'])}, "
            f"the model's relative MASE {num(a['relative_mase'])}"
        )
        bias = ", ".join(f"{k[5:]} {num(x, '+.4g')}" for k, x in a.items() if k.startswith("bias.") and x is not None)
        lines.append(f"  bias (forecast - actual): {bias}  (scaled {num(a['bias_scaled'], '+.3f')})")
        cov = (
            f"{a['coverage']:.1%} inside the {a['coverage_nominal']:.0%} interval"
            if a.get("coverage") is not None
            else "n/a (the forecasts carry no quantiles)"
        )
        lines.append(f"  interval coverage: {cov}")
    lines.append(f"drift: the last {th['drift_rows']} rows vs the training split (reference: {last['reference']})")
    if last["drift"]:
        rows = [["variable", "PSI", "training windows", "limit", "outside bounds", "bounds"]]
        tho = Thresholds(**th)
        for var, d in last["drift"].items():
            b = d.get("bounds")
            limit = psi_limit(tho, d)
            rows.append(
                [
                    var,
                    num(d["psi"], ".3f"),
                    num(d.get("psi_normal"), ".3f"),
                    num(limit, ".3f"),
                    "-" if d["outside"] is None else f"{d['outside']:.1%}",
                    f"[{b[0]:.4g}, {b[1]:.4g}]" if b else "-",
                ]
            )
        w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  " + "  ".join(c.ljust(x) for c, x in zip(r, w)).rstrip() for r in rows]
    lines.append(
        f"  thresholds: PSI {th['psi']} (and above the training windows' own), outside share {th['outside_share']}"
    )
    lines.append(f"verdict: {'RETRAIN: ' if v['retrain'] else ''}{v['reason']}")
    for b in v["breaches"] if not v["retrain"] else []:
        lines.append(f"  {b}")
    trig = state.get("last_trigger")
    if trig:
        lines.append(
            f"last retrain trigger: {trig['at']}: flow run {trig.get('flow_run_name', '?')} "
            f"({trig.get('flow_run_id', '?')}) of {trig.get('deployment', '?')}: {trig['reason']}"
        )
        until = _parse(trig["at"]) + timedelta(hours=th["cooldown_hours"])
        left = (until - now).total_seconds() / 3600
        lines.append(
            f"cooldown: {th['cooldown_hours']:g} h: "
            + (f"until {_iso(until)} ({left:.1f} h left)" if left > 0 else "over")
        )
    else:
        lines.append(f"last retrain trigger: none (cooldown {th['cooldown_hours']:g} h after each)")
    err = state.get("last_trigger_error")
    if err:
        lines.append(f"last trigger error: {err['at']}: {err['error']}")
    return "\n".join(lines)
