"""A training run's life after the loop: score candidates, export and gate them, track them in
MLflow, register the best and let the promotion policy decide. Plain functions; the Prefect flow
in flows/training.py only calls them in order."""

from __future__ import annotations

import functools
import json
import logging
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..catalog import train_summary_path
from ..config import Settings
from ..data.panel_windows import COLD, PanelWindowSet
from ..data.windowset import WindowSet
from ..errors import CellcastError, ExportError
from ..modeling import panel_eval, plots
from ..modeling.evaluate import (
    BaselineReport,
    empirical_interval_scores,
    evaluate_baselines,
    evaluate_forecasts,
    forecast_origins,
    forecast_windows,
    mase_scale,
    metrics,
    quantiles_by_step,
    season_of,
    seasonal_naive,
    targets_after,
    usable_seasons,
    walk_forward_quantiles,
    window_losses,
)
from ..modeling.quantiles import conformal_shift, crossings, forecast_level, interval_name, intervals
from ..modeling.train import TrainResult, code_version, predictor, quantile_predictor
from . import promotion, tracking
from .results import ResultRow, result_rows, text_table

log = logging.getLogger(__name__)


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
    seasons = settings.evaluate.seasons if settings.evaluate.seasons != "auto" else ws.meta.seasons
    seasons = usable_seasons(ws, list(seasons), split="val")  # val precedes test: usable for both
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

    def coverage(self) -> dict[str, tuple[float, float]]:
        """Each interval's test coverage and nominal level: what the promotion policy's calibration gate reads."""
        return {
            k[len("coverage_") :]: (v, self.test[f"nominal_{k[len('coverage_') :]}"])
            for k, v in self.test.items()
            if k.startswith("coverage_") and f"nominal_{k[len('coverage_') :]}" in self.test
        }


def onnx_metadata(ws: WindowSet, settings: Settings) -> dict:
    m = ws.meta
    return {
        "dataset": m.name,
        "freq": m.freq,
        # the opening hours (data/schedule.py): forecasts are stamped with open steps, the service refuses others
        "schedule": m.schedule,
        "variables": m.variables,
        "targets": m.targets,
        "lookback": m.lookback,
        "horizon": m.horizon,
        "data_md5": m.data_md5,
        "params_hash": settings.fingerprint(),
        # variable -> [lo, hi]: plausible inputs, profiled on the training rows; forecast and serve check them
        "bounds": m.value_bounds,
        # the phase of the series' grid (readings at :51 past, days from 09:00): the service refuses requests off it
        "grid_origin": str(ws.timestamps[0].astype("datetime64[s]")) if len(ws.timestamps) else None,
        "reference": training_reference(ws, settings),
        # the known-future block in order: each column "calendar" (whoever forecasts computes it from the
        # timestamps, with `calendar`) or "user" (values the forecast's caller must supply)
        "future_names": m.future_names,
        "future_kinds": m.future_kinds,
        "calendar": m.calendar or {},
        **({"panel": panel_metadata(ws)} if isinstance(ws, PanelWindowSet) else {}),
    }


def panel_metadata(ws: PanelWindowSet) -> dict:
    """What a panel model needs to forecast its series without the registry (ONNX metadata `panel`): the id
    columns, and per series its ids, its status (ok | cold_start) and the mean and scale of each variable (the
    graph reads `(value - mean) / scale` and returns targets in those units: the caller unscales)."""
    p = ws.meta.panel
    return {
        "id_cols": p["id_cols"],
        "scaling": p["scaling"],
        "series": {
            s: {
                "ids": p["series"][s],
                "status": p["status"][s].split(" ", 1)[0],
                "mean": p["scales"][s]["mean"],
                "scale": p["scales"][s]["scale"],
                # its columns constant per series (ingest --static): the forecast and the service supply them
                **({"static": p["static"][s]} if p.get("static") else {}),
            }
            for s in ws.series_ids
        },
    }


def model_metadata(ws: WindowSet, settings: Settings, candidate: str) -> dict:
    """What travels inside an exported candidate: onnx_metadata(), its name, and the time span of the rows it
    was trained and selected on (a later promotion scores it only on rows after them)."""
    return onnx_metadata(ws, settings) | {"candidate": candidate, "split_times": ws.meta.split_times}


def split_tags(ws: WindowSet) -> dict:
    """The rows a version was trained (train) and selected (val) on, as registry tags."""
    st = ws.meta.split_times
    return {"train_start": st["train"][0], "train_end": st["train"][1], "val_end": st["val"][1]}


REFERENCE_ROWS = 2_000_000  # a panel's training rows the drift reference profiles at most (whole series, evenly)


def _reference_rows(ws: PanelWindowSet, cap: int = REFERENCE_ROWS) -> np.ndarray:
    """bool (rows,): the training rows of every series, or of every k-th series when all of them exceed `cap`: the
    reference is a distribution, which an even sample of whole series estimates, while every row of 10,000 series
    of a year in one frame took 20 GB."""
    m = np.zeros(len(ws.values), dtype=bool)
    every = max(1, -(-int(np.sum(ws.train_end)) // cap))
    for o, e in list(zip(ws.offsets, ws.train_end))[::every]:
        m[o : o + e] = True
    return m


def training_reference(ws: WindowSet, settings: Settings) -> dict:
    """The training split as monitoring compares recent data with it (data/drift.py), and the scale of the
    model's MASE: recorded with the model (ONNX metadata `reference`)."""
    from ..data.drift import reference_profile, residual_season, window_rows
    from ..modeling.evaluate import mase_scale

    # a panel: every series' own training rows, or an even sample of whole series past REFERENCE_ROWS
    rows = _reference_rows(ws) if isinstance(ws, PanelWindowSet) else slice(0, ws.meta.bounds["val"])
    values = ws.values[rows] if ws.filled is None else np.where(ws.filled[rows], np.nan, ws.values[rows])
    train = pd.DataFrame(values, columns=ws.meta.variables)  # observed cells only: filled ones are NaN
    train.insert(0, "timestamp", pd.to_datetime(ws.timestamps[rows]))
    if ws.is_panel:
        train = train.sort_values("timestamp", kind="stable")
    return reference_profile(
        train,
        ws.meta.variables,
        ws.meta.targets,
        settings.monitor.psi_bins,
        settings.validate_.profile_tolerance,
        dict(zip(ws.meta.targets, mase_scale(ws).tolist())),
        window_rows(settings.monitor.drift_rows, ws.meta.lookback, settings.monitor.psi_bins),
        # seasonal differences need one series in time order: a panel's interleaved rows have none
        season=None if ws.is_panel else residual_season(ws.meta.freq, len(train), ws.meta.schedule),
    )


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
    yv, qv = forecast_windows(run, ws, ws.starts["val"])
    yt, qt = forecast_windows(run, ws, ws.starts["test"])
    if qv is not None and qt is not None and _walks_forward(ws, settings):
        qt = recalibrate_walk_forward(result, ws, settings, (yv, qv), (yt, qt))
        if ok:  # the served graph carries the shift of every miss, held-out and test
            parity, error, onnx_path = _export(result, ws, settings, path, x, f)
            ok = bool(parity.get("ok")) and error is None
    del x, f
    val, _ = evaluate_forecasts(ws, "val", yv, qv, levels)
    test, by_step = evaluate_forecasts(ws, "test", yt, qt, levels)
    panel = (
        panel_scores(ws, settings, {"test": yt, COLD: forecast_windows(run, ws, ws.starts[COLD])[0]})
        if isinstance(ws, PanelWindowSet)
        else {}
    )
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
        interval_by_step=quantiles_by_step(ws, "test", qt, levels) if qt is not None else {},
        crossings=crossings(qt) if qt is not None else 0,
        calibration=result.calibration,
        anchor=result.anchor,
        panel=panel,
    )


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


def _walks_forward(ws: WindowSet, settings: Settings) -> bool:
    """Whether the test split's bands are recalibrated walk-forward (evaluate.calibration_update): one series only,
    a panel's test windows (every series' origins pooled) keep the held-out windows' calibration."""
    ev = settings.evaluate
    return ev.calibration_update == "walk_forward" and ev.calibration != "none" and not ws.is_panel


def recalibrate_walk_forward(
    result: TrainResult,
    ws: WindowSet,
    settings: Settings,
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """The test quantiles recalibrated walk-forward (evaluate.walk_forward_quantiles) on the misses of the calibrated
    forecasts (`val`, `test`: point and quantiles of every validation and test window): the shift on top of the
    held-out calibration, with the same rule and units (evaluate.calibration, the calibration's scale).
    Adds the shift of every miss, held-out and test, to the model's `q_shift` (`q_scale` in units of the level) and
    records it in `result.calibration`. Returns the walk-forward test quantiles."""
    import torch

    from ..modeling.train import calibration_starts

    ev = settings.evaluate
    levels = list(result.model.quantiles)
    (pv, qv), (pt, qt) = val, test
    fit = calibration_starts(ws, settings)
    rows = np.searchsorted(ws.starts["val"], fit)

    def shift(y: np.ndarray, q: np.ndarray, mask, paths) -> np.ndarray:
        return conformal_shift(y, q, levels, mask, ev.calibration, ev.calibration_parts, paths)

    windows = None if ev.calibration_windows == "all" else int(ev.calibration_windows)
    relative = (result.calibration or {}).get("scale") == "level"
    level = (forecast_level(pv[rows]), forecast_level(pt)) if relative else None
    q, extra = walk_forward_quantiles(
        ws, fit, qv[rows], ws.starts["test"], qt, levels, shift, ev.calibration_rank, windows, level
    )
    model = result.model
    buffer = model.q_scale if relative else model.q_shift
    buffer.add_(torch.from_numpy(extra.astype(np.float32)).to(buffer.device))
    scale = np.ones((1, 1, 1)) if relative else model.target_scale().cpu().numpy()[None, :, None]
    L, H = ws.meta.lookback, ws.meta.horizon
    last = ws.starts["test"][-1] if len(ws.starts["test"]) else fit[-1]
    total = buffer.cpu().numpy()
    result.calibration = dict(result.calibration or {}) | {
        "update": "walk_forward: each test origin recalibrated on the misses observed before it",
        "split": "val+test",
        "test_windows": int(len(ws.starts["test"])),
        "last_target": str(pd.Timestamp(ws.timestamps[last + L + H - 1])),
        "mean_shift_scaled": {f"{lv:g}": float((total / scale)[..., k].mean()) for k, lv in enumerate(levels)},
    }
    return q.astype(np.float32)


def panel_scores(ws: PanelWindowSet, settings: Settings, pred: dict[str, np.ndarray]) -> dict:
    """A panel candidate per series against each series' own baselines, and the aggregate (modeling/panel_eval)."""
    seasons = settings.evaluate.seasons if settings.evaluate.seasons != "auto" else ws.meta.seasons
    table = panel_eval.series_table(ws, pred, [m for m in seasons if m > 1])
    return {"aggregate": panel_eval.aggregate(table), "series": table.to_dict(orient="records")}


def lineage(ws: WindowSet, settings: Settings) -> dict:
    return {
        "data_md5": ws.meta.data_md5 or "unknown",
        "params_hash": settings.fingerprint(),
        "git_commit": git_commit(),
        "cellcast_version": __version__,
        "code_version": code_version(),
        "dataset": ws.meta.name,
    }


def data_tags(kept) -> dict:
    """Where the data of a version is kept (versioning.keep's DataVersion): its md5 and the DVC store(s) holding it."""
    where = "local DVC cache" + (f" + DVC remote '{kept.remote}'" if kept.remote else f" only ({kept.note})")
    return {"data_version": kept.md5, "data_kept": where}


def data_command(dataset: str, version: int) -> str:
    """The command that restores the data version `version` of the dataset's model was trained on."""
    return f"cellcast data get {dataset} --version {version} --out DIR"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class ChampionScore:
    version: int
    test: dict | None  # its scores on the comparison windows
    comparable: bool
    reason: str = ""
    trained_until: str | None = None  # the last row it was trained or selected on (None: not recorded)
    windows: int = 0  # comparison windows: test origins after trained_until
    starts: list[int] = field(default_factory=list, repr=False)
    losses: list[float] = field(default_factory=list, repr=False)


def trained_until(metadata: dict, tags: dict) -> str | None:
    """The last row a registered model saw in training or selection: from its ONNX metadata, else its tags."""
    split = metadata.get("split_times") or {}
    return (split.get("val") or [None, None])[1] or tags.get("val_end") or None


def score_champion(model_name: str, ws: WindowSet, starts=None) -> ChampionScore | None:
    """The current champion re-scored by ONNX Runtime on the test origins `starts` (default: every test
    window, stride 1) that lie after every row it trained on (it may have been trained on newer data)."""
    from ..engine.inference import OnnxForecaster

    info = tracking.get_alias(model_name, "champion")
    if info is None:
        return None
    try:
        path, info = tracking.download_model(model_name, "champion")
        eng = OnnxForecaster.from_path(path, device="cpu")
    except CellcastError as e:
        return ChampionScore(info.version, None, False, f"champion v{info.version} could not be loaded: {e}")
    if eng.variables != ws.meta.variables or eng.horizon != ws.meta.horizon or eng.lookback > ws.meta.lookback:
        return ChampionScore(
            info.version,
            None,
            False,
            f"champion v{info.version} is not comparable (variables {eng.variables}, horizon "
            f"{eng.horizon}, lookback {eng.lookback} vs {ws.meta.variables}, {ws.meta.horizon}, "
            f"{ws.meta.lookback})",
        )
    try:  # the champion's own known-future columns (it may read another calendar than the candidates)
        table = ws.future_table_for(eng.future_names, eng.future_kinds, eng.calendar) if eng.future_name else None
    except ValueError as e:
        return ChampionScore(info.version, None, False, f"champion v{info.version} is not comparable: {e}")
    until = trained_until(eng.metadata, info.tags)
    starts = ws.starts["test"] if starts is None else np.asarray(starts)
    if until is not None:
        starts = starts[targets_after(ws, starts, until)]
    if not len(starts):
        return ChampionScore(info.version, None, True, "", until, 0)
    pred, _ = forecast_windows(  # the champion's own known-future block, or none when it reads none
        lambda xb, fb: (eng.predict(xb, fb if table is not None else None), None), ws, starts, table=table
    )
    y = ws.targets(starts)
    reason = "" if until else f"champion v{info.version}'s training rows are not recorded: scored on every test window"
    return ChampionScore(
        info.version,
        metrics(y, pred, mase_scale(ws), ws.target_mask(starts)),
        True,
        reason,
        until,
        len(starts),
        [int(s) for s in starts],
        window_losses(ws, starts, pred).tolist(),
    )


def comparisons(
    ws: WindowSet, settings: Settings, best: CandidateReport, starts: np.ndarray, champion: ChampionScore | None
) -> tuple[promotion.Comparison, promotion.Comparison | None]:
    """The evidence the policy weighs: the best candidate's per-window losses (ONNX Runtime) beside the
    strongest baseline's on the same test windows (every origin, stride 1: `starts`), and beside the champion's on
    the windows whose targets it never saw."""
    from ..engine.inference import OnnxForecaster

    H = ws.meta.horizon
    if len(starts):
        assert best.onnx_path is not None  # the best is among the candidates whose export passed parity
        eng = OnnxForecaster.from_path(best.onnx_path, device="cpu")
        pred, _ = forecast_windows(lambda xb, fb: (eng.predict(xb, fb), None), ws, starts)
        cand = window_losses(ws, starts, pred)
    else:
        cand = np.zeros(0)
    rivals = {}
    for name in _baseline_seasons(ws, settings):
        pred = seasonal_naive(ws, starts, season_of(name))
        if np.isfinite(pred).all():  # a baseline that reads into a break is no bar on these windows
            rivals[name] = window_losses(ws, starts, pred)
    strongest = min(rivals, key=lambda k: rivals[k].mean()) if len(starts) and rivals else "naive"
    baseline = promotion.Comparison(
        strongest, cand, rivals.get(strongest, np.zeros(0)), settings.evaluate.promotion_margin, horizon=H
    )
    if champion is None or not champion.comparable:
        return baseline, None
    mine = np.isin(starts, champion.starts)
    return baseline, promotion.Comparison(
        f"champion v{champion.version}", cand[mine], np.asarray(champion.losses), horizon=H
    )


def interval_scores(ws: WindowSet, settings: Settings, best: CandidateReport, bar: str) -> dict[str, tuple]:
    """Per interval of the candidate: (its Winkler score, the bar's empirical intervals' Winkler score) on every
    test window (evaluate.empirical_interval_scores); {} when the gate is off or either has no score."""
    if not settings.evaluate.interval_score_gate or not best.quantiles or bar not in _baseline_seasons(ws, settings):
        return {}
    theirs = empirical_interval_scores(
        ws,
        season_of(bar),
        best.quantiles,
        rank=settings.evaluate.calibration_rank,
        walk=_walks_forward(ws, settings),
        scale=(best.calibration or {}).get("scale", "absolute"),
    )
    return {
        k[len("winkler_") :]: (float(v), float(theirs[k]))
        for k, v in best.test.items()
        if k.startswith("winkler_") and k in theirs
    }


def _baseline_seasons(ws: WindowSet, settings: Settings) -> list[str]:
    """The naive family the bar is chosen from: naive and the seasonal naives whose season validation sees."""
    seasons = settings.evaluate.seasons if settings.evaluate.seasons != "auto" else ws.meta.seasons
    return ["naive"] + [f"seasonal_naive_{m}" for m in usable_seasons(ws, list(seasons), split="val")]


@dataclass
class Outcome:
    dataset: str
    model_name: str
    parent_run_id: str
    best: str | None
    version: int | None
    decision: dict
    candidates: list[dict]
    baselines: dict
    champion_before: dict | None
    champion_after: int | None
    tracking_uri: str
    # how the best candidate was picked (evaluate.selection) and the classical reference rows (modeling/classical.py)
    selection: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)

    def rows(self) -> list[ResultRow]:
        """Candidates, baselines and references as one typed table (registry/results.py): what every reader shows."""
        return result_rows(self.candidates, self.baselines, self.references)


def reference_rows(ws: WindowSet, settings: Settings, mapper=None, parts: int = 1) -> dict:
    """The classical references of evaluate.references (modeling/classical.py) on the promotion's test origins (a
    horizon apart), each with its scores or the status that says why it has none. A panel: per series, on a sample
    of its series, in `parts` chunks mapped by `mapper` (modeling/panel_references.py)."""
    from ..modeling import classical, panel_references

    if not settings.evaluate.references:
        return {}
    starts = forecast_origins(ws, "test")
    if isinstance(ws, PanelWindowSet):
        return panel_references.reference_rows(ws, starts, settings, mapper, parts)
    return classical.reference_scores(ws, starts, classical.references(ws, starts, settings))


def _compare_panel_references(ws: PanelWindowSet, references: dict, starts: np.ndarray, losses: np.ndarray) -> None:
    """The best candidate per series beside each reference on the same origins (the share of series it beats each
    on), logged on the parent run."""
    from ..modeling import panel_references

    panel_references.compare_model(references, ws, starts, losses)
    tracking.log_metrics(
        {
            f"ref_{name}_{k}": row[k]
            for name, row in references.items()
            for k in ("share_model_beats", "model_mean_mase", "model_median_mase")
            if k in row
        }
    )
    tracking.log_dict(references, "references.json")


def _select(ok: list[CandidateReport], selection: dict | None) -> tuple[CandidateReport, str]:
    """The best candidate and a sentence saying how it was picked (evaluate.selection)."""
    means = (selection or {}).get("mean_mase") or {}
    if selection is not None and means:
        best = min(ok, key=lambda r: (means.get(r.name, float("inf")), r.val["mase"]))
        return best, (
            f"selected by the backtest's mean MASE over {selection['folds']} folds before the test split "
            f"({best.name} {means.get(best.name, float('nan')):.3f}; evaluate.selection: backtest)"
        )
    best = min(ok, key=lambda r: r.val["mase"])
    return best, f"selected by validation MASE ({best.name} {best.val['mase']:.3f}; evaluate.selection: split)"


def track_and_promote(
    ws: WindowSet,
    settings: Settings,
    base: Baselines,
    results: list[TrainResult],
    reports: list[CandidateReport],
    validation_report: Path | None = None,
    flow_run_id: str | None = None,
    selection: dict | None = None,
    references: dict | None = None,
    data_version=None,
) -> Outcome:
    """One parent run per training run, a nested run per candidate; the best parity-checked candidate by
    validation MASE (or, given `selection`'s backtest means, by those) becomes a new version (alias challenger); the
    policy decides on champion. `references`: reference_rows(), logged beside the baselines. `data_version`: what
    versioning.keep() did with the validated data (tagged on the version with the command that restores it)."""
    settings.check_dataset(ws.meta.name)
    uri = tracking.configure()
    references = references or {}
    sel = {"method": "backtest", **selection} if selection else {"method": "split"}
    model_name = settings.model_name
    tags = lineage(ws, settings) | {"flow_run_id": flow_run_id or "none", "anchor_season": str(base.anchor_season)}
    if data_version is not None:
        tags |= data_tags(data_version)
    tracking.end_undecided(model_name)  # a version a killed run registered and never decided: marked, not reused
    with tracking.parent_run(ws.meta.name, run_name=f"train-{ws.meta.name}", tags=tags) as parent_id:
        _log_inputs(ws, base, reports, references, selection, sel["method"], validation_report)
        _log_pictures(ws, base, results, reports)
        for res, report in zip(results, reports):
            _log_candidate(ws, settings, res, report, tags)
        ok = [r for r in reports if r.parity_ok and r.error is None]
        starts = ws.starts["test"]  # every origin: the test weighs overlapping windows with a HAC variance
        champ_before = score_champion(model_name, ws, starts)
        outcome = functools.partial(
            Outcome,
            dataset=ws.meta.name,
            model_name=model_name,
            parent_run_id=parent_id,
            candidates=[asdict(r) for r in reports],
            baselines=base.to_dict(),
            champion_before=_champ_dict(champ_before),
            tracking_uri=uri,
            selection=sel,
            references=references,
        )
        if not ok:
            decision = promotion.Decision(False, "no candidate passed its ONNX parity gate: nothing registered", {})
            tracking.set_tags({"promotion.decision": "rejected", "promotion.reason": decision.reason})
            before = champ_before.version if champ_before else None
            return outcome(best=None, version=None, decision=asdict(decision), champion_after=before)
        best, how = _select(ok, selection)
        sel["why"] = how
        same = _same_as_champion(model_name, best, tags)
        if same is not None:
            # a rerun on unchanged data, params and code: the champion already is this model
            decision = promotion.Decision(
                False,
                f"{best.name} is the model champion v{same} already is (same data, "
                f"params, code and candidate): nothing registered ({how})",
                {},
            )
            tracking.set_tags({"promotion.decision": "unchanged", "promotion.reason": decision.reason})
            return outcome(best=best.name, version=None, decision=asdict(decision), champion_after=same)
        decision = _decide(ws, settings, best, how, starts, champ_before, references)
        version = _register(ws, model_name, best, tags, data_version)
        decision = _record_decision(model_name, version, best, decision, champ_before)
        champ = tracking.get_alias(model_name, "champion")
        return outcome(
            best=best.name, version=version, decision=asdict(decision), champion_after=champ.version if champ else None
        )


def _log_inputs(
    ws: WindowSet,
    base: Baselines,
    reports: list[CandidateReport],
    references: dict,
    selection: dict | None,
    method: str,
    validation_report: Path | None,
) -> None:
    """On the parent run: the data's shape, the baselines' and references' scores, the backtest's selection means and
    the validation report."""
    tracking.log_params(
        {
            "dataset": ws.meta.name,
            "lookback": ws.meta.lookback,
            "horizon": ws.meta.horizon,
            "freq": ws.meta.freq,
            "variables": ",".join(ws.meta.variables),
            "candidates": ",".join(r.name for r in reports),
            "anchor_season": base.anchor_season,
            "rows": ws.meta.rows,
            **{f"windows_{k}": v for k, v in ws.meta.counts.items()},
        }
    )
    for split, rep in (("val", base.val), ("test", base.test)):
        for bname, sc in rep.scores.items():
            tracking.log_metrics({f"{split}_{bname}_{k}": v for k, v in sc.items()})
    tracking.log_dict(base.to_dict(), "baselines.json")
    for rname, row in references.items():
        tracking.log_metrics(
            {f"ref_{rname}_test_{k}": row[k] for k in ("mase", "smape", "mae", "rmse") if k in row}
            | {f"ref_{rname}_{k}": row[k] for k in ("mean_mase", "median_mase", "series") if k in row}
            | {f"ref_{rname}_seconds": row["seconds"]}
        )
    tracking.set_tags(
        {f"ref.{rname}.status": row["status"] for rname, row in references.items()} | {"selection": method}
    )
    if references:
        tracking.log_dict(references, "references.json")
    if selection:
        tracking.log_metrics({f"backtest_{k}_mase_mean": v for k, v in selection.get("mean_mase", {}).items()})
    if validation_report and Path(validation_report).is_file():
        tracking.log_artifact(validation_report, "validation")


def _decide(
    ws: WindowSet,
    settings: Settings,
    best: CandidateReport,
    how: str,
    starts: np.ndarray,
    champ_before: ChampionScore | None,
    references: dict,
) -> promotion.Decision:
    """The policy's decision on `best`: compared with the baselines and the champion on every test origin, its
    reason saying why, across how many series, and how `best` was selected (`how`)."""
    vs_baseline, vs_champion = comparisons(ws, settings, best, starts, champ_before)
    ev = settings.evaluate
    decision = promotion.decide(
        best.name,
        vs_baseline,
        vs_champion,
        significance=ev.significance,
        first_significance=ev.first_significance,
        min_windows=ev.min_decision_paths,
        parity_ok=best.parity_ok,
        champion_version=champ_before.version if vs_champion is not None and champ_before is not None else None,
        coverage=best.coverage(),
        coverage_tolerance=ev.coverage_tolerance,
        widths={k[len("width_") :]: v for k, v in best.test.items() if k.startswith("width_")},
        interval_scores=interval_scores(ws, settings, best, vs_baseline.rival),
    )
    spaced = np.isin(starts, forecast_origins(ws, "test"))  # what the classical references are scored on
    if isinstance(ws, PanelWindowSet) and references and vs_baseline.n == len(starts):
        _compare_panel_references(ws, references, starts[spaced], vs_baseline.candidate[spaced])
    if vs_baseline.n == len(starts) and spaced.any() and "candidate_mase" in decision.metrics:
        decision.metrics["candidate_mase_spaced"] = float(f"{vs_baseline.candidate[spaced].mean():.6g}")
        decision.metrics["baseline_mase_spaced"] = float(f"{vs_baseline.other[spaced].mean():.6g}")
    if champ_before and champ_before.reason:
        decision.reason += f" ({champ_before.reason})"
    if best.panel:  # the pooled test says better or not; the reason says across how many series, and the worst
        decision.reason += f"; {panel_eval.describe(best.panel['aggregate'])}"
    decision.reason += f" [{how}]"
    return decision


def _register(ws: WindowSet, model_name: str, best: CandidateReport, tags: dict, data_version) -> int:
    """`best` as a new version of `model_name`, tagged with its lineage, test scores and parity (and, when its data
    is versioned, the command that restores that data)."""
    version = tracking.register_version(
        model_name,
        best.model_uri,
        best.run_id,
        tags=tags
        | split_tags(ws)
        | {
            "candidate": best.name,
            "cell": best.cell,
            "test_mase": f"{best.test['mase']:.6g}",
            **{f"test_coverage_{k}": f"{v[0]:.4g}" for k, v in best.coverage().items()},
            "parity_max_rel": f"{best.parity.get('max_rel_to_scale', 'nan')}",
        },
    )
    if data_version is not None:
        tracking.set_version_tags(model_name, version, {"data_get": data_command(ws.meta.name, version)})
    return version


def _record_decision(
    model_name: str,
    version: int,
    best: CandidateReport,
    decision: promotion.Decision,
    champ_before: ChampionScore | None,
) -> promotion.Decision:
    """The decision applied to the registry (aliases and version tags) and tagged on the parent run; not promoted
    after all when the champion moved while this run decided."""
    applied = tracking.apply_decision(
        model_name, version, decision, expected_champion=champ_before.version if champ_before else None
    )
    if decision.promote and applied.tags.get("promotion.decision") != "promoted":
        # the champion moved while this run decided (another machine's training, a rollback): not promoted
        decision = promotion.Decision(False, applied.tags["promotion.reason"], decision.metrics)
    tracking.set_tags(
        {
            "promotion.decision": "promoted" if decision.promote else "rejected",
            "promotion.reason": decision.reason,
            "registered_version": str(version),
            "best_candidate": best.name,
        }
    )
    return decision


def log_local_comparison(ws: WindowSet, settings: Settings, comparison: dict) -> str:
    """Local models (train.strategy: local; modeling/local.py) as one comparison run `local-NAME` of the dataset's
    experiment: per candidate the aggregate as metrics (`<candidate>_panel_*`), the per-series table, the series
    that could not train. Nothing is registered. Returns the run id."""
    tags = lineage(ws, settings) | {"cellcast.kind": "comparison", "strategy": "local"}
    with tracking.parent_run(ws.meta.name, run_name=f"local-{ws.meta.name}", tags=tags) as run_id:
        for cand, c in comparison.items():
            tracking.log_metrics(
                {
                    f"{cand}_panel_{k}": v
                    for k, v in c["aggregate"].items()
                    if isinstance(v, (int, float)) and v is not None
                }
            )
            tracking.log_metrics(
                {
                    f"{cand}_models": c["models"],
                    f"{cand}_train_seconds": c["seconds"],
                    f"{cand}_train_windows_per_s": c["windows_per_s"],
                }
            )
            tracking.log_table(pd.DataFrame(c["series"]), f"{cand}/per_series.json")
            if c["failed"]:
                tracking.log_dict(c["failed"], f"{cand}/failed.json")
    return run_id


def _same_as_champion(model_name: str, best: CandidateReport, tags: dict) -> int | None:
    """The champion's version when it was trained from the same data, params and committed code as `best`
    (the project's commit and cellcast's own code: an upgrade of cellcast is new code too)."""
    champ = tracking.get_alias(model_name, "champion")
    commit = tags.get("git_commit", "unknown")
    if champ is None or commit == "unknown" or commit.endswith("-dirty"):
        return None
    keys = ("data_md5", "params_hash", "git_commit", "code_version")
    if all(champ.tags.get(k) == tags.get(k) for k in keys) and champ.tags.get("candidate") == best.name:
        return champ.version
    return None


def _champ_dict(c: ChampionScore | None) -> dict | None:
    return {k: v for k, v in asdict(c).items() if k not in ("starts", "losses")} if c else None


def _log_candidate(ws: WindowSet, settings: Settings, res: TrainResult, rep: CandidateReport, tags: dict) -> None:
    c = res.candidate
    params = {
        "cell": c.cell,
        "hidden_size": c.hidden_size,
        "num_layers": c.num_layers,
        **{k: v for k, v in settings.train.model_dump().items() if k not in ("cells", "hidden_size", "num_layers")},
        "anchor_season": res.model.spec.anchor_season,
        "rnn_steps_used": res.model.spec.steps,
        "anchor_used": (rep.anchor or {}).get("kind"),
        "quantiles": ",".join(f"{q:g}" for q in rep.quantiles),
        "calibration_windows": (rep.calibration or {}).get("windows"),
        "future_inputs": ",".join(ws.meta.future_names),
    }
    with tracking.candidate_run(rep.name, params=params, tags=tags | {"cell": c.cell}) as run_id:
        rep.run_id = run_id
        # the models before the metrics: MLflow copies every metric the run already holds onto each model it logs
        # (a history read per metric key, seconds per model); the scores are linked to the ONNX model directly below
        example, future = ws.inputs(ws.starts["test"][:2])
        tracking.log_torch_model(res.model, example, future_example=future)
        model_id = None
        if rep.onnx_path and rep.parity_ok:
            rep.model_uri = tracking.log_onnx_model(
                Path(rep.onnx_path), example, future_example=future, metadata=model_metadata(ws, settings, rep.name)
            )
            model_id = rep.model_uri.removeprefix("models:/")
        for row in res.history:
            tracking.log_metrics(
                {"train_loss": row["train_loss"], "val_loss": row["val_loss"], "lr": row["lr"]}, step=row["epoch"]
            )
        tracking.log_metrics(
            {
                "initial_val_loss": res.initial_val_loss,
                "best_val_loss": res.best_val_loss,
                "best_epoch": res.best_epoch,
                "train_seconds": res.seconds,
                "train_windows_per_s": res.windows_per_s,
                **{f"val_{k}": v for k, v in rep.val.items()},
                **{f"test_{k}": v for k, v in rep.test.items()},
                **{f"test_mase_h{i + 1}": v for i, v in enumerate(rep.by_step)},
                **{
                    f"test_{k}_h{i + 1}": v
                    for k, steps in rep.interval_by_step.items()
                    for i, v in enumerate(steps)
                    if np.isfinite(v)
                },
                "test_quantile_crossings": rep.crossings,
            },
            model_id=model_id,
        )
        tracking.set_tags(
            {
                "stopped": rep.stopped,
                "device": rep.device,
                "parity.ok": str(rep.parity_ok),
                "parity.reason": rep.parity.get("reason", ""),
                **{
                    f"parity.{name}.max_rel": f"{b['max_rel_to_scale']:.3g}"
                    for name, b in rep.parity.get("branches", {}).items()
                },
            }
        )
        tracking.log_dict(asdict(rep), "candidate.json")
        if rep.panel:
            tracking.log_metrics(
                {
                    f"panel_{k}": v
                    for k, v in rep.panel["aggregate"].items()
                    if isinstance(v, (int, float)) and v is not None
                }
            )
            tracking.log_table(pd.DataFrame(rep.panel["series"]), "per_series.json")
        tracking.log_dict({"bounds": ws.meta.value_bounds, "profiled_on": ws.meta.split_times["train"]}, "bounds.json")


def _log_pictures(ws: WindowSet, base: Baselines, results: list[TrainResult], reports: list[CandidateReport]) -> None:
    m = ws.meta
    ti, H = 0, m.horizon
    starts = ws.starts["test"][-10 * H :]  # the last ten horizons of the test range: readable, not a smear
    first = starts[0] + m.lookback  # row of the first forecast step drawn
    actual = ws.values[first:, m.target_idx[ti]]
    x, f = ws.inputs(starts)
    fc = {base.test.best: seasonal_naive(ws, starts, season_of(base.test.best))[:, :, ti]}
    for res in results:
        fc[res.candidate.name] = predictor(res.model)(x, f)[:, :, ti]
    # the intervals of the candidate validation ranks first: the bands a planner would read
    bands = {}
    ranked = sorted(zip(results, reports), key=lambda rr: rr[1].val.get("mase", float("inf")))
    if ranked and ranked[0][0].model.quantiles:
        res, rep = ranked[0]
        _, q = quantile_predictor(res.model)(x, f)
        if q is not None:  # None only without windows to forecast
            for lo, hi, nominal in intervals(list(res.model.quantiles)):
                bands[f"{res.candidate.name} {interval_name(nominal)}%"] = (q[:, :, ti, lo], q[:, :, ti, hi])
    if not ws.is_panel:  # a panel's test range runs through many series: drawn per series below
        fig = plots.forecast_vs_actual(
            ws.timestamps[first:],
            actual,
            fc,
            f"{m.name}: last {len(starts) // H or 1} forecasts of the test range",
            m.targets[ti],
            bands=bands,
        )
        tracking.log_figure(fig, "forecast_vs_actual.png")
        plots.close(fig)
    fig = plots.loss_curves({r.candidate.name: r.history for r in results}, f"{m.name}: loss")
    tracking.log_figure(fig, "loss_curves.png")
    plots.close(fig)
    steps = {base.test.best: base.test.by_step[base.test.best], **{r.name: r.by_step for r in reports}}
    fig = plots.error_by_horizon(steps, f"{m.name}: test MASE by horizon step")
    tracking.log_figure(fig, "error_by_horizon.png")
    plots.close(fig)
    if isinstance(ws, PanelWindowSet):
        _log_panel_pictures(ws, results, reports)


def _log_panel_pictures(ws: PanelWindowSet, results: list[TrainResult], reports: list[CandidateReport]) -> None:
    """The candidate validation ranks first: its test forecasts of the best, median and worst series (in each
    series' own units) beside the series' strongest baseline, and the MASE of every series."""
    ranked = sorted(zip(results, reports), key=lambda rr: rr[1].val.get("mase", float("inf")))
    res, rep = ranked[0]
    agg = rep.panel.get("aggregate") or {}
    if not agg.get("series"):
        return
    table = pd.DataFrame(rep.panel["series"]).set_index("series_id")
    m = ws.meta
    by_series = ws.series_starts("test")
    run = predictor(res.model)
    panels = []
    for which in ("best", "median", "worst"):
        sid = agg[f"{which}_series"]
        starts = by_series[sid][-10 * m.horizon :]
        first = starts[0] + m.lookback
        end = ws.offsets[ws.series_ids.index(sid)] + ws.lengths[ws.series_ids.index(sid)]
        x, f = ws.inputs(starts)
        unscale = lambda y, starts=starts: ws.unscale_targets(y, starts)[:, :, 0]  # noqa: E731
        row = table.loc[sid]
        fc = {res.candidate.name: unscale(run(x, f))}
        if row["strongest_baseline"]:
            fc[row["strongest_baseline"]] = unscale(seasonal_naive(ws, starts, season_of(row["strongest_baseline"])))
        mean, scale = ws.scaler(sid)
        actual = ws.values[first:end, m.target_idx[0]] * scale[m.target_idx[0]] + mean[m.target_idx[0]]
        panels.append(
            {
                "label": f"{which}: series '{sid}' (MASE {row['mase']:.3f}; {row['strongest_baseline']} "
                f"{row['strongest_mase']:.3f})",
                "timestamps": ws.timestamps[first:end],
                "actual": actual,
                "forecasts": fc,
            }
        )
    fig = plots.panel_small_multiples(
        panels, f"{m.name}: {res.candidate.name}, best / median / worst series by test MASE", m.targets[0]
    )
    tracking.log_figure(fig, "panel_series_forecasts.png")
    plots.close(fig)
    ok = table[table["status"] == "ok"]
    fig = plots.mase_distribution(
        {res.candidate.name: ok["mase"].to_numpy(), "strongest baseline (per series)": ok["strongest_mase"].to_numpy()},
        f"{m.name}: test MASE across {len(ok)} series",
    )
    tracking.log_figure(fig, "panel_mase_distribution.png")
    plots.close(fig)


def summary_table(outcome: Outcome) -> str:
    """The table `cellcast run` prints: candidates, metrics, baselines and the promotion decision."""
    rows = outcome.rows()
    lines = text_table(rows)
    d = outcome.decision
    verdict = "PROMOTED to champion" if d.get("promote") else "not promoted"
    registered = f"{outcome.model_name} v{outcome.version}" if outcome.version else "nothing"
    anchor = next((c.get("anchor") for c in outcome.candidates if c.get("anchor")), None)
    if anchor:
        vals = ", ".join(f"{k} {v:.3f}" for k, v in (anchor.get("val_mase") or {}).items())
        lines += [
            "",
            f"anchor: {anchor['kind']}"
            + (f" (validation MASE: {vals})" if vals else "")
            + (f"; {anchor['reason']}" if anchor.get("reason") else ""),
        ]
    cal = next((c.get("calibration") for c in outcome.candidates if c.get("calibration")), None)
    if cal and cal.get("windows"):
        mode = cal["method"].rsplit("; ", 1)[-1].rstrip(")")
        walked = f" and walk-forward on {cal['test_windows']} test windows" if cal.get("test_windows") else ""
        lines.append(
            f"quantiles conformalised on {cal['windows']} validation windows{walked} "
            f"({cal.get('first_target')} .. {cal.get('last_target')}; {mode})"
        )
    elif cal:
        lines.append(f"quantiles: {cal['method']} (evaluate.calibration)")
    panel = [c for c in outcome.candidates if (c.get("panel") or {}).get("aggregate")]
    if panel:
        lines.append(
            "a panel: each series scaled by its own one-step naive error, so MAE above is MASE (sMAPE is of "
            "scaled values)"
        )
    for c in panel:
        lines.append(f"per series, {c['name']}: {panel_eval.describe(c['panel']['aggregate'])}")
    lines += reference_lines(outcome)
    lines += [
        "",
        f"best candidate: {outcome.best or '-'}  registered: {registered}",
        f"decision: {verdict}: {d.get('reason')}",
        f"champion now: {('v' + str(outcome.champion_after)) if outcome.champion_after else 'none'}",
    ]
    return "\n".join(lines)


def reference_lines(outcome: Outcome) -> list[str]:
    """The classical references beside the best candidate and the bar, on the promotion's test origins."""
    refs = outcome.references or {}
    if not refs:
        return []
    d = outcome.decision.get("metrics") or {}
    first = next(iter(refs.values()))
    if "series_total" in first:  # a panel: per series, aggregated
        from ..modeling import panel_references

        return [
            "",
            "references per series (statsmodels, each series' own units, fitted before its first test origin and "
            "rolled forward over its origins a horizon apart; evidence, not the bar):",
            *(f"  {panel_references.describe(name, row)}" for name, row in refs.items()),
        ]
    n = first.get("windows")
    if not n:
        return ["", f"references ({', '.join(refs)}): {first['status']}"]
    out = [
        "",
        f"references (statsmodels, fitted before the first of the {n} promotion origins, a horizon apart, and "
        f"rolled forward; evidence, not the bar):",
    ]
    for name, row in refs.items():
        out.append(
            f"  {name:6s} "
            + (
                f"test MASE {row['mase']:.3f}  sMAPE {row['smape']:.2f}  "
                f"({row['seconds']:.0f}s, {row.get('fits')} fits)"
                if "mase" in row
                else row["status"]
            )
        )
    cand, bar = (
        d.get("candidate_mase_spaced", d.get("candidate_mase")),
        d.get("baseline_mase_spaced", d.get("baseline_mase")),
    )
    if cand is not None:
        out.append(f"  on the same origins: {outcome.best} {cand:.3f}, bar {d.get('baseline_name')} {bar:.3f}")
    return out


def write_summary(outcome: Outcome, settings: Settings) -> Path:
    path = train_summary_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(outcome), indent=2, default=str))
    return path
