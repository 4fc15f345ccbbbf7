"""A trained candidate assessed: the baselines it is measured against, its export to ONNX gated on parity,
its scores on validation and test with the engine that will serve it (per series for a panel), in one
CandidateReport."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Settings
from ..data.panel_windows import COLD, PanelWindowSet
from ..data.windowset import WindowSet
from ..errors import ExportError
from ..modeling import panel_eval
from ..modeling.evaluate import (
    BaselineReport,
    evaluate_baselines,
    evaluate_forecasts,
    evaluation_seasons,
    forecast_windows,
    mase_scale,
    observed_cells,
    pooled,
    pooled_steps,
    quantiles_by_step,
    season_of,
    usable_seasons,
    walk_forward_quantiles,
    window_parts,
)
from ..modeling.quantiles import crossings, forecast_level, further_shift, quantile_scores, window_winkler
from ..modeling.train import TrainResult, quantile_predictor
from .metadata import model_metadata


@dataclass
class Baselines:
    val: BaselineReport
    test: BaselineReport
    anchor_season: int | None  # the season the residual models are anchored on

    def to_dict(self) -> dict:
        return {"val": asdict(self.val), "test": asdict(self.test), "anchor_season": self.anchor_season}


def baselines(ws: WindowSet, settings: Settings) -> Baselines:
    """Naive and seasonal naive at every natural season; the best on *validation* anchors the models
    (choosing on test would leak), if its season fits the lookback."""
    seasons = evaluation_seasons(settings, ws)
    seasons = usable_seasons(ws, seasons, split="val")  # val precedes test: usable for both
    val = evaluate_baselines(ws, "val", seasons)
    test = evaluate_baselines(ws, "test", seasons)
    fitting = {k: v for k, v in val.scores.items() if season_of(k) <= ws.meta.lookback and v["coverage"] == 1.0}
    anchor = season_of(min(fitting, key=lambda k: fitting[k]["mase"])) if fitting else None
    return Baselines(val, test, anchor)


@dataclass
class CandidateReport:
    name: str
    cell: str
    hidden_size: int
    num_layers: int
    val: dict
    test: dict
    by_step: list[float]
    best_epoch: int
    epochs: int
    stopped: str
    seconds: float
    windows_per_s: float
    device: str
    parity: dict = field(default_factory=dict)
    parity_ok: bool = False
    onnx_path: str | None = None
    error: str | None = None
    run_id: str | None = None
    model_uri: str | None = None
    scored_with: str = "torch"  # "onnx" once the export passed its parity gate: what serves is scored
    quantiles: list[float] = field(default_factory=list)  # the levels it forecasts (val/test hold their scores)
    interval_by_step: dict = field(default_factory=dict)  # test coverage / width / CRPS per horizon step
    crossings: int = 0  # test forecasts with a level below the one before it (0: ordered graph)
    calibration: dict = field(default_factory=dict)  # the conformal shift's held-out windows
    anchor: dict = field(default_factory=dict)  # what its residual is over
    panel: dict = field(default_factory=dict)  # a panel: {aggregate, series: per-series rows} (modeling/panel_eval.py)
    # each test window's Winkler score per interval (one series; a panel's windows are too many to keep): what the
    # interval-score gate tests against the bar's (registry/decision.py)
    test_winkler: dict[str, list[float]] = field(default_factory=dict)

    def coverage(self) -> dict[str, tuple[float, float]]:
        """Each interval's test coverage and nominal level: what the promotion policy's calibration gate reads."""
        return {
            k[len("coverage_") :]: (v, self.test[f"nominal_{k[len('coverage_') :]}"])
            for k, v in self.test.items()
            if k.startswith("coverage_") and f"nominal_{k[len('coverage_') :]}" in self.test
        }


# test windows the export's parity check reads at most, evenly spread over the split: every path through the graph
# runs on them (a full batch, batch 1); the scores are ONNX Runtime's over every window, read once below
PARITY_WINDOWS = 1024


def assess(result: TrainResult, ws: WindowSet, settings: Settings, out_dir: Path) -> CandidateReport:
    """Export a trained candidate to ONNX, check parity on real test windows, and score it on validation and
    test with the engine that will serve it (ONNX Runtime; PyTorch only when the export failed)."""
    from ..engine.inference import OnnxForecaster

    settings.check_dataset(ws.meta.name)
    c = result.candidate
    path = Path(out_dir) / f"{c.name}.onnx"
    test_starts = ws.starts["test"]  # evenly spread below: all test windows of a panel are GBs
    x, f = ws.inputs(test_starts[:: -(-len(test_starts) // PARITY_WINDOWS)])
    parity, error, onnx_path = _export(result, ws, settings, path, x, f)
    ok = bool(parity.get("ok")) and error is None
    if ok:
        engine = OnnxForecaster.from_path(path, device="cpu")
        run = lambda xb, fb: engine.predict_all(xb, fb)[:2]  # noqa: E731
    else:
        run = quantile_predictor(result.model)
    levels = list(result.model.quantiles)
    if isinstance(ws, PanelWindowSet):  # scored a part of the series at a time: its test windows are GBs whole
        del x, f
        s = score_panel(run, ws, settings, levels)
        val, test, by_step, interval_steps, crossed, panel = s.val, s.test, s.by_step, s.steps, s.crossings, s.panel
        winkler: dict[str, list[float]] = {}
    else:
        yv, qv = forecast_windows(run, ws, ws.starts["val"])
        yt, qt = forecast_windows(run, ws, ws.starts["test"])
        if qv is not None and qt is not None and walks_forward(ws, settings):
            qt = recalibrate_walk_forward(result, ws, settings, (yv, qv), (yt, qt))
            if ok:  # the served graph carries the shift of every miss, held-out and test
                parity, error, onnx_path = _export(result, ws, settings, path, x, f)
                ok = bool(parity.get("ok")) and error is None
        del x, f
        val, _ = evaluate_forecasts(ws, "val", yv, qv, levels)
        test, by_step = evaluate_forecasts(ws, "test", yt, qt, levels)
        interval_steps = quantiles_by_step(ws, "test", qt, levels) if qt is not None else {}
        crossed = crossings(qt) if qt is not None else 0
        panel = {}
        winkler = {} if qt is None else test_winkler(ws, qt, levels)
    return CandidateReport(
        name=c.name,
        cell=c.cell,
        hidden_size=c.hidden_size,
        num_layers=c.num_layers,
        val=val,
        test=test,
        by_step=by_step,
        best_epoch=result.best_epoch,
        epochs=len(result.history),
        stopped=result.stopped,
        seconds=result.seconds,
        windows_per_s=result.windows_per_s,
        device=result.device,
        parity=parity,
        parity_ok=ok,
        onnx_path=onnx_path,
        error=error,
        scored_with="onnx" if ok else "torch",
        quantiles=levels,
        interval_by_step=interval_steps,
        crossings=crossed,
        calibration=result.calibration,
        anchor=result.anchor,
        panel=panel,
        test_winkler=winkler,
    )


def test_winkler(ws: WindowSet, q: np.ndarray, levels: list[float]) -> dict[str, list[float]]:
    """Each test window's Winkler score per interval, in MASE units (quantiles.window_winkler)."""
    st = ws.starts["test"]
    scores = window_winkler(ws.targets(st), q, levels, mase_scale(ws), ws.target_mask(st))
    return {k: v.tolist() for k, v in scores.items()}


def _export(
    result: TrainResult, ws: WindowSet, settings: Settings, path: Path, x, f
) -> tuple[dict, str | None, str | None]:
    """Export the candidate to ONNX at `path` and check parity on the windows `x` (future `f`): (parity, the export's
    error or None, the file or None)."""
    from ..engine.onnx_export import check_parity, export_onnx

    try:
        export_onnx(
            result.model,
            path,
            model_metadata(ws, settings, result.candidate.name)
            | {"calibration": result.calibration, "anchor": result.anchor},
            example=x[:2],
            future_example=None if f is None else f[:2],
        )
        res = check_parity(result.model, path, x, rtol=settings.registry.parity_atol, future=f)
    except ExportError as e:
        return {"ok": False, "reason": str(e)}, str(e), None
    parity = {
        "ok": res.ok,
        "max_abs": res.max_abs,
        "max_rel_to_scale": res.max_rel_to_scale,
        "windows": res.n,
        "tolerance": res.rtol,
        "reason": res.reason,
        "branches": {b.name: b.to_dict() for b in res.branches},
    }
    return parity, None, str(path)


def walks_forward(ws: WindowSet, settings: Settings) -> bool:
    """Whether the test split's bands are recalibrated walk-forward (evaluate.calibration_update): one series only,
    a panel's test windows (every series' origins pooled) keep the held-out windows' calibration."""
    ev = settings.evaluate
    return ev.calibration_update in ("walk_forward", "adaptive") and ev.calibration != "none" and not ws.is_panel


def adapts(settings: Settings) -> bool:
    """Whether the walk-forward reads its ranks at levels adapted to how the bands covered so far
    (evaluate.calibration_update: adaptive)."""
    return settings.evaluate.calibration_update == "adaptive"


def recalibrate_walk_forward(
    result: TrainResult,
    ws: WindowSet,
    settings: Settings,
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """The test quantiles recalibrated walk-forward (evaluate.walk_forward_quantiles) on the misses of the calibrated
    forecasts (`val`, `test`: point and quantiles of every validation and test window): the shift on top of the
    held-out calibration, with the same rule and units (evaluate.calibration, the calibration's scale); under
    `widen` the band may come back toward the heads as trained, never past them.
    Adds the shift of every miss, held-out and test, to the model's `q_shift` (`q_scale` in units of the level) and
    records it in `result.calibration`. Returns the walk-forward test quantiles."""
    import torch

    from ..modeling.train import calibration_starts

    ev = settings.evaluate
    levels = list(result.model.quantiles)
    (pv, qv), (pt, qt) = val, test
    fit = calibration_starts(ws, settings)
    rows = np.searchsorted(ws.starts["val"], fit)

    relative = (result.calibration or {}).get("scale") == "level"
    model = result.model
    buffer = model.q_scale if relative else model.q_shift
    held = buffer.detach().cpu().numpy().astype(np.float64)  # the held-out calibration, in the misses' units

    def shift(y: np.ndarray, q: np.ndarray, mask, paths, at=None) -> np.ndarray:
        return further_shift(held, y, q, levels, mask, ev.calibration, ev.calibration_parts, paths, at)

    windows = None if ev.calibration_windows == "all" else int(ev.calibration_windows)
    level = (forecast_level(pv[rows]), forecast_level(pt)) if relative else None
    q, extra = walk_forward_quantiles(
        ws, fit, qv[rows], ws.starts["test"], qt, levels, shift, ev.calibration_rank, windows, level, adapts(settings)
    )
    buffer.add_(torch.from_numpy(extra.astype(np.float32)).to(buffer.device))
    scale = np.ones((1, 1, 1)) if relative else model.target_scale().cpu().numpy()[None, :, None]
    L, H = ws.meta.lookback, ws.meta.horizon
    last = ws.starts["test"][-1] if len(ws.starts["test"]) else fit[-1]
    total = buffer.cpu().numpy()
    result.calibration = dict(result.calibration or {}) | {
        "update": "walk_forward: each test origin recalibrated on the misses observed before it"
        + ("; its levels adapted to the coverage of the test windows observed before it" if adapts(settings) else ""),
        "split": "val+test",
        "test_windows": int(len(ws.starts["test"])),
        "last_target": str(pd.Timestamp(ws.timestamps[last + L + H - 1])),
        "mean_shift_scaled": {f"{lv:g}": float((total / scale)[..., k].mean()) for k, lv in enumerate(levels)},
    }
    return q.astype(np.float32)


@dataclass
class PanelScores:
    val: dict  # evaluate_forecasts' scores of every validation window
    test: dict  # ... and of every test window
    by_step: list[float]  # test MASE per horizon step
    steps: dict  # test coverage / width / CRPS per horizon step (quantiles_by_step)
    crossings: int
    panel: dict  # {aggregate, series: per-series rows} (modeling/panel_eval.py)


def score_panel(
    run, ws: PanelWindowSet, settings: Settings, levels: list[float], series: int | None = None
) -> PanelScores:
    """A panel candidate's scores, `run(x, future) -> (point, quantiles or None)` forecasting `series` whole series'
    windows at a time (default: about evaluate.PANEL_WINDOWS windows; evaluate.window_parts), never every window at
    once: the split's means pooled from the parts' (evaluate.pooled: the same to the bit in one part, to a float64
    sum's rounding in more), the per-series rows and the crossings as from every window at once."""
    seasons = evaluation_seasons(settings, ws)
    seasons = [m for m in seasons if m > 1]
    H, T = ws.meta.horizon, len(ws.meta.targets)
    scores: dict[str, list] = {"val": [], "test": []}
    steps: list = []
    interval: list = []
    crossed = 0
    rows: list[dict] = []
    for split in ("val", "test", COLD):
        starts = ws.starts.get(split, np.zeros(0, np.int64))
        # its forecasts and quantiles, float32, are ~0.4 KB a window at horizon 24 and 5 levels
        for part in window_parts(ws, starts, series):
            at = starts[part]
            y, q = forecast_windows(run, ws, at)
            if split == COLD:
                rows += panel_eval.series_rows(ws, split, at, y, seasons)
            else:
                mask = ws.target_mask(at)
                cells = observed_cells(ws, at, mask)
                per_step = np.full(H, len(at) * T) if mask is None else mask.sum(axis=(0, 2))
                out, by = evaluate_forecasts(ws, split, y, q, levels, starts=at)
                scores[split].append((out, cells))
                if split == "test":
                    steps.append(({"mase": by}, per_step))
                    if q is not None:
                        qs = quantile_scores(ws.targets(at), q, levels, mase_scale(ws), mask)[1]
                        interval.append((qs, per_step))
                        crossed += crossings(q)
                    rows += panel_eval.series_rows(ws, split, at, y, seasons)
                del mask
            del y, q  # freed before the next part's are made: one part's forecasts at a time
    table = pd.DataFrame(rows)
    if not (scores["val"] and scores["test"]):  # a split with no window: its scores as at once (NaN)
        empty = np.zeros((0, H, T), np.float32)
        none = evaluate_forecasts(ws, "val", empty, None, levels, starts=np.zeros(0, np.int64))
    return PanelScores(
        val=pooled(scores["val"]) if scores["val"] else none[0],
        test=pooled(scores["test"]) if scores["test"] else none[0],
        by_step=pooled_steps(steps)["mase"] if steps else none[1],
        steps=pooled_steps(interval) if interval else {},
        crossings=crossed,
        panel={"aggregate": panel_eval.aggregate(table), "series": table.to_dict(orient="records")},
    )
