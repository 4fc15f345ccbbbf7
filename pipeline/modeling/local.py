"""Local models, for comparison (`train.strategy: local`): one model per series and candidate cell, each trained
on its own series' windows only, scored per series as the global model is (modeling/panel_eval.py). Never
registered: the training flow logs them as a comparison run beside the global model, so a user can see which wins.

The work fans out like the panel validation (data/panel_validation.py): `local_comparison(..., mapper=...)` maps the
plain function `train_local` over picklable `LocalTask`s (one series' window set, the candidate, the settings); by
default one after another here, or over a Dask cluster with `panel_validation.client_mapper(client)`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from ..config import Settings
from ..data.panel_windows import COLD, PanelWindowSet
from ..data.windowset import WindowMeta
from . import panel_eval
from .anchor import choose_anchor
from .evaluate import evaluation_seasons, forecast_windows
from .train import Candidate, candidates, predictor, train_candidate


def series_set(ws: PanelWindowSet, i: int) -> PanelWindowSet:
    """Series i of a panel as a panel of one (its rows and its break row, its windows shifted to them): views of
    the panel's arrays, no copy."""
    o, n = int(ws.offsets[i]), int(ws.lengths[i])
    rows = slice(o, o + n + 1)
    sid = ws.series_ids[i]
    starts = {}
    for k, st in ws.starts.items():
        mine = st[ws.series_index(st) == i] if len(st) else st
        starts[k] = (mine - o).astype(np.int64)
    p = ws.meta.panel
    panel = {
        **p,
        "series": {sid: p["series"][sid]},
        "status": {sid: p["status"][sid]},
        "scales": {sid: p["scales"][sid]},
        "counts": {sid: p["counts"][sid]},
    }
    meta: WindowMeta = replace(
        ws.meta,
        name=f"{ws.meta.name}/{sid}",
        rows=n + 1,
        panel=panel,
        counts={k: int(len(v)) for k, v in starts.items()},
    )
    return PanelWindowSet(
        ws.values[rows],
        ws.timestamps[rows],
        meta,
        starts,
        None if ws.filled is None else ws.filled[rows],
        None if ws.future is None else ws.future[rows],
        offsets=np.zeros(1, np.int64),
        lengths=ws.lengths[i : i + 1],
        train_end=ws.train_end[i : i + 1],
    )


@dataclass
class LocalTask:
    series_id: str
    ws: PanelWindowSet  # the series alone (series_set)
    candidate: Candidate
    settings: Settings
    season: int | None  # the global run's anchor season (its best seasonal naive on validation)


@dataclass
class LocalResult:
    series_id: str
    candidate: str
    pred: np.ndarray | None  # (test windows, H, T) in the series' scaled units; None when it could not train
    seconds: float
    windows_per_s: float
    epochs: int
    error: str | None = None


def train_local(task: LocalTask) -> LocalResult:
    """One series' own model (its own anchor, fitted on its own windows) and its test forecasts."""
    t0 = time.perf_counter()
    try:
        anchor = choose_anchor(task.ws, task.settings, task.season)
        res = train_candidate(task.ws, task.candidate, task.settings, anchor=anchor, device="cpu")
        pred = forecast_windows(lambda x, f: (predictor(res.model)(x, f), None), task.ws, task.ws.starts["test"])[0]
        return LocalResult(
            task.series_id, task.candidate.name, pred, time.perf_counter() - t0, res.windows_per_s, len(res.history)
        )
    except Exception as e:  # noqa: BLE001  (one series that cannot train is a row of the comparison, not its end)
        return LocalResult(
            task.series_id, task.candidate.name, None, time.perf_counter() - t0, 0.0, 0, f"{type(e).__name__}: {e}"
        )


def local_tasks(ws: PanelWindowSet, settings: Settings, season: int | None) -> list[LocalTask]:
    """One task per series with its own splits and per candidate (a cold-start series has no training windows)."""
    out = []
    for cand in candidates(settings):
        for i, sid in enumerate(ws.series_ids):
            if ws.meta.panel["counts"][sid].get("train"):
                out.append(LocalTask(sid, series_set(ws, i), cand, settings, season))
    return out


def local_comparison(ws: PanelWindowSet, settings: Settings, season: int | None, mapper=None) -> dict:
    """Every candidate as local models: per candidate the per-series table and its aggregate (as the global model's),
    the summed training seconds and the mean windows/s, the series that could not train. `mapper(fn, tasks)`:
    builtin map by default, or panel_validation.client_mapper(client) for a Dask cluster."""
    mapper = mapper or (lambda fn, tasks: map(fn, tasks))
    tasks = local_tasks(ws, settings, season)
    results = list(mapper(train_local, tasks))
    seasons = evaluation_seasons(settings, ws)
    by_series = ws.series_starts("test")
    H, T = ws.meta.horizon, len(ws.meta.targets)
    out = {}
    for cand in candidates(settings):
        mine = {r.series_id: r for r in results if r.candidate == cand.name}
        parts = []
        for sid, st in by_series.items():
            r = mine.get(sid)
            got = None if r is None else r.pred
            parts.append(got if got is not None and len(got) == len(st) else np.full((len(st), H, T), np.nan))
        pred = np.concatenate(parts) if parts else np.zeros((0, H, T))
        table = panel_eval.series_table(
            ws.with_starts(**{COLD: np.zeros(0, np.int64)}), {"test": pred}, [m for m in seasons if m > 1]
        )
        table = table.dropna(subset=["mase"])
        trained = [r for r in mine.values() if r.pred is not None]
        out[cand.name] = {
            "aggregate": panel_eval.aggregate(table),
            "series": table.to_dict(orient="records"),
            "models": len(trained),
            "seconds": float(sum(r.seconds for r in mine.values())),
            "windows_per_s": float(np.mean([r.windows_per_s for r in trained])) if trained else 0.0,
            "failed": {r.series_id: r.error for r in mine.values() if r.pred is None},
        }
    return out
