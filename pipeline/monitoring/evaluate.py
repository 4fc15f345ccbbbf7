"""One evaluation: score, measure drift, judge, write the files and the monitoring run in MLflow."""

from __future__ import annotations

import logging
import re
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ..catalog import forecasts_dir, monitoring_dir
from ..config import Settings
from ..data import drift as drifts
from ..errors import DataValidationError
from ..files import write_json, write_parquet
from .champion import load_champion
from .report import MonitorReport
from .scoring import _scale_before, accuracy, read_forecasts, score_points
from .state import read_state, state_path
from .verdict import _iso, _parse, judge, thresholds

log = logging.getLogger(__name__)


def evaluate(settings: Settings, now: datetime | None = None, log_to_mlflow: bool = True) -> MonitorReport:
    """Score the champion's forecasts on the actuals that arrived, measure drift, judge; write the files
    and log the evaluation to the monitoring run. Raises NoChampionError when there is nothing to monitor."""
    from ..catalog import is_panel, read_validated, read_validated_meta

    name = settings.dataset
    now = now or datetime.now(UTC)
    if is_panel(read_validated_meta(settings)):
        return evaluate_panel(settings, now, log_to_mlflow)
    frame, _ = read_validated(settings)
    frame = frame.sort_values("timestamp").reset_index(drop=True)
    champ = load_champion(settings, frame)
    th = thresholds(settings.monitor, champ.horizon, champ.lookback)
    ts = frame["timestamp"]
    since = ts.iloc[max(len(ts) - th.window, 0)]
    forecasts = read_forecasts(forecasts_dir(settings), champ.version, since)
    points = score_points(forecasts, frame, champ.targets, champ.season, since)
    scale = (champ.reference or {}).get("mase_scale") or _scale_before(frame, champ.targets, since)
    acc = accuracy(points, scale, champ.targets)
    recent = frame.iloc[-th.drift_rows :]
    lag = int((champ.reference or {}).get("season") or 0)  # the seasonal differences reach back this far
    before = frame.iloc[max(len(frame) - th.drift_rows - lag, 0) : max(len(frame) - th.drift_rows, 0)]
    drift = drifts.drift(recent, champ.reference, champ.bounds, before) if champ.reference else {}
    state = read_state(settings)
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
    return _finish(rep, points, state, settings, log_to_mlflow, scale)


def evaluate_panel(settings: Settings, now: datetime, log_to_mlflow: bool = True) -> MonitorReport:
    """evaluate() for a panel: every series scored and judged, the panel's verdict on the share past a threshold
    (monitoring/panel.py); the per-series table in reports/NAME/monitoring/series.parquet."""
    from ..catalog import SERIES_ID, read_validated_panel
    from . import panel

    name = settings.dataset
    frame, _ = read_validated_panel(settings)
    frame = frame.sort_values([SERIES_ID, "timestamp"], kind="stable").reset_index(drop=True)
    champ = load_champion(settings, frame)
    if champ.panel is None:
        raise DataValidationError(
            f"{name}: a panel, but {settings.model_name} v{champ.version} was trained on one series: retrain it "
            f"(cellcast train {name}) before monitoring"
        )
    th = thresholds(settings.monitor, champ.horizon, champ.lookback)
    # the earliest first step of any series' rolling window: the forecasts older than it score nothing
    since = frame.groupby(SERIES_ID)["timestamp"].agg(lambda t: t.iloc[max(len(t) - th.window, 0)]).min()
    forecasts = read_forecasts(forecasts_dir(settings), champ.version, since)
    table, points, per_series = panel.series_figures(frame, forecasts, champ, th, now)
    acc = panel.pooled_accuracy(points, champ.targets)
    state = read_state(settings)
    verdict = panel.panel_verdict(table, settings.monitor.panel_share, th, state, now)
    rep = MonitorReport(
        dataset=name,
        model_name=settings.model_name,
        version=champ.version,
        evaluation=int(state.get("evaluations", 0)) + 1,
        at=_iso(now),
        data_until=str(frame["timestamp"].max()),
        window_start=str(since),
        accuracy=acc,
        test_mase=champ.test_mase,
        mase_ratio=(acc["mase"] / champ.test_mase if champ.test_mase and np.isfinite(acc["mase"]) else None),
        season=champ.season,
        drift=panel.worst_drift(per_series),
        reference=champ.reference_source,
        thresholds=asdict(th),
        verdict=verdict,
        panel=panel.panel_summary(table) | {"share_limit": settings.monitor.panel_share},
    )
    rep.files["series"] = str(write_parquet(table, monitoring_dir(settings) / "series.parquet"))
    return _finish(rep, points, state, settings, log_to_mlflow)


def _finish(
    rep: MonitorReport,
    points: pd.DataFrame,
    state: dict,
    settings: Settings,
    log_to_mlflow: bool,
    scale: dict | None = None,
) -> MonitorReport:
    """The evaluation's files, its MLflow step and the state. scale: the champion's MASE scale per target (one
    series), kept in the state for the live log's scores."""
    name = settings.dataset
    folder = monitoring_dir(settings)
    rep.files["points"] = str(write_parquet(points, folder / "points.parquet"))
    rep.files["scores"] = str(_append_scores(rep, folder / "scores.parquet"))
    if log_to_mlflow:
        rep.run_id = _log(rep)
    step = rep.evaluation
    champ_version = rep.version
    state.update(
        {
            "dataset": name,
            "evaluations": step,
            "last": _jsonable(asdict(rep)),
            "monitoring_run_id": rep.run_id or state.get("monitoring_run_id"),
        }
    )
    if scale is not None:  # the scale the live log is scored on (`cellcast monitor` reads it without the registry)
        state["mase_scale"] = {"version": rep.version, "scale": _jsonable(dict(scale))}
    write_json(state_path(settings), state)
    log.info("%s v%s: %s", settings.model_name, champ_version, _summary(rep))
    return rep


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
