"""Rolling-origin backtests (`cellcast backtest NAME`, evaluate.selection: backtest): plain functions; the Prefect flow
in flows/backtest.py calls them in order.

Each fold (data/folds.py) gets its candidates (backtest.refit: retrain trains them on the fold's own rows with the
same seeds and params; calibration trains them once, on the first fold's rows, and recomputes only the conformal
calibration on each fold's validation rows), the baselines and the classical references, all scored on the fold's
test origins a horizon apart (as promotion scores them) with the metrics of modeling/evaluate.py and quantiles.py.
Candidates are scored by PyTorch (no export per fold: the ONNX parity gate of the training run covers the graph).
The fold's `selected` row is the candidate its validation MASE picks, what a training run on that fold would offer.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..catalog import backtest_paths
from ..config import Settings
from ..data.folds import Fold, PanelFold, fold_windowset, folds_for, panel_folds
from ..data.panel_windows import PanelWindowSet
from ..data.windowset import WindowSet
from ..errors import DataValidationError
from ..modeling import classical, panel_references, plots
from ..modeling.anchor import choose_anchor
from ..modeling.evaluate import (
    evaluate_forecasts,
    evaluation_seasons,
    forecast_origins,
    forecast_windows,
    mase_scale,
    metrics,
    season_of,
    seasonal_naive,
    usable_seasons,
    window_losses,
)
from ..modeling.quantiles import quantile_scores
from ..modeling.train import (
    TrainResult,
    anchor_alone,
    build_ensemble,
    calibrate,
    candidates,
    quantile_predictor,
    train_candidate,
)

log = logging.getLogger(__name__)

# the metrics whose spread over the folds is reported (each present where the model produces it)
SPREAD = ("mase", "smape", "coverage_80", "coverage_90", "winkler_80", "winkler_90", "crps")


@dataclass
class FoldRecord:
    fold: Fold
    times: dict[str, list[str]]  # first and last timestamp of each block
    origins: int  # test origins scored (a horizon apart)
    scores: dict[str, dict]  # model -> metrics on the test origins (references: + status)
    val_mase: dict[str, float]  # candidate -> validation MASE (all the fold's validation windows)
    selected: str  # the candidate its validation picks
    bar: str  # the strongest of the naive family on its test origins
    trained_on: list[int]  # the rows the candidates were trained on: [0, end)
    origin_times: list[str] = field(default_factory=list)  # first target of each origin
    losses: dict[str, list[float]] = field(default_factory=dict)  # model -> MASE of each origin
    seconds: float = 0.0
    # a panel: model -> series id -> its MASE on the series' origins (the origins' own losses are not kept)
    series: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self) | {"fold": asdict(self.fold) | {"rows": self.fold.rows()}}


@dataclass
class BacktestResult:
    dataset: str
    folds: list[FoldRecord]
    refit: str
    end: int  # rows [0, end) were backtested
    spread: dict[str, dict[str, dict[str, float]]]  # model -> metric -> mean / std / min / max over the folds
    seconds: float = 0.0
    parent_run_id: str | None = None
    picture: str | None = None

    def mean_mase(self, names: list[str] | None = None) -> dict[str, float]:
        """Each model's mean test MASE over the folds (of the candidates `names`, default every model)."""
        return {k: v["mase"]["mean"] for k, v in self.spread.items() if "mase" in v and (names is None or k in names)}

    def series_table(self) -> pd.DataFrame:
        """A panel: one row per series that sat in a fold: the folds it sat in, the selected candidate's mean MASE
        over them, each fold's bar's, each reference's, and the share of its folds where the selected beat the bar
        (empty for one series)."""
        rows: dict[str, dict] = {}
        for r in self.folds:
            sel, bar = r.series.get("selected") or {}, r.series.get(r.bar) or {}
            for sid, v in sel.items():
                row = rows.setdefault(sid, {"series_id": sid, "folds": 0, "_sel": [], "_bar": [], "_beats": []})
                row["folds"] += 1
                row["_sel"].append(v)
                row["_bar"].append(bar.get(sid, np.nan))
                row["_beats"].append(v < bar.get(sid, np.inf))
                for name, per in r.series.items():
                    if name.startswith("ref_") and sid in per:
                        row.setdefault(f"_{name}", []).append(per[sid])
        out = []
        for row in rows.values():
            flat = {"series_id": row["series_id"], "folds": row["folds"]}
            flat["mase"] = float(np.mean(row["_sel"]))
            flat["bar_mase"] = float(np.nanmean(row["_bar"])) if np.isfinite(row["_bar"]).any() else np.nan
            flat["share_folds_beating_bar"] = float(np.mean(row["_beats"]))
            for k, v in row.items():
                if k.startswith("_ref_"):
                    flat[f"{k[1:]}_mase"] = float(np.mean(v))
            out.append(flat)
        return pd.DataFrame(out).sort_values("mase", ascending=False, kind="stable") if out else pd.DataFrame()

    def panel_aggregate(self) -> dict:
        """A panel over the folds: the series scored, mean and median of their MASE, the share of series whose
        selected candidate beats the bar on most of their folds, the worst series."""
        t = self.series_table()
        if not len(t):
            return {}
        worst = t.iloc[0]
        return {
            "series": int(len(t)),
            "mean_mase": float(t["mase"].mean()),
            "median_mase": float(t["mase"].median()),
            "mean_bar_mase": float(t["bar_mase"].mean()),
            "share_beating_bar": float((t["share_folds_beating_bar"] > 0.5).mean()),
            "worst_series": str(worst["series_id"]),
            "worst_mase": float(worst["mase"]),
            "worst_bar_mase": float(worst["bar_mase"]),
        }

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "refit": self.refit,
            "end": self.end,
            "seconds": round(self.seconds, 1),
            "parent_run_id": self.parent_run_id,
            "spread": self.spread,
            "folds": [f.to_dict() for f in self.folds],
            **({"panel": self.panel_aggregate()} if any(f.series for f in self.folds) else {}),
        }


def plan(ws: WindowSet, settings: Settings, k: int | None = None, end: int | None = None) -> list[Fold]:
    """The folds of `ws` (backtest.folds unless `k`), ending at `end` (default: the series' end); one clear line
    when the series is too short for them."""
    settings.check_dataset(ws.meta.name)
    k = settings.backtest.folds if k is None else k
    try:
        if isinstance(ws, PanelWindowSet):  # cut on the shared time axis; `end`: before every series' test split
            return list(panel_folds(ws, k, settings, before_test=end is not None))
        return folds_for(ws, k, end)
    except ValueError as e:
        raise DataValidationError(
            f"{ws.meta.name}: backtest.folds {k}: {e}: use fewer folds or a longer series"
        ) from None


def anchor_season(ws: WindowSet, settings: Settings) -> int | None:
    """The season the residual models of this window set are anchored on: the best seasonal naive on validation
    among those the lookback holds (as assessment.baselines chooses it)."""
    from .assessment import baselines

    return baselines(ws, settings).anchor_season


def fit_candidates(
    fws: WindowSet, settings: Settings, device: str = "cpu", on_epoch: Callable[[str, dict], None] | None = None
) -> list[TrainResult]:
    """Every candidate of params.yaml trained on a fold's rows (same seeds and params as `cellcast train`; no
    checkpoints: a fold's weights are not the training run's), and their ensemble when train.ensemble."""
    anchor = choose_anchor(fws, settings, anchor_season(fws, settings))
    results = []
    for cand in candidates(settings):
        cb = (lambda row, n=cand.name: on_epoch(n, row)) if on_epoch else None
        results.append(train_candidate(fws, cand, settings, anchor.season, anchor=anchor, device=device, on_epoch=cb))
    ens = build_ensemble(results, fws, settings)
    alone = anchor_alone(results, fws, settings, anchor)
    return results + [r for r in (ens, alone) if r is not None]


def recalibrated(results: list[TrainResult], fws: WindowSet, settings: Settings) -> list[TrainResult]:
    """The same trained candidates with their conformal calibration recomputed on the fold's validation rows."""
    out = []
    for r in results:
        model = copy.deepcopy(r.model)
        cal = calibrate(model, fws, settings)
        out.append(_with(r, model=model, calibration=cal))
    return out


def _with(r: TrainResult, **kw) -> TrainResult:
    c = copy.copy(r)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def _naive_family(fws: WindowSet, settings: Settings, origins: np.ndarray) -> dict[str, np.ndarray]:
    seasons = evaluation_seasons(settings, fws)
    out = {}
    for name in ["naive"] + [f"seasonal_naive_{m}" for m in usable_seasons(fws, seasons, split="val")]:
        pred = seasonal_naive(fws, origins, season_of(name))
        if np.isfinite(pred).all():  # a baseline reading into a break is no bar on these windows
            out[name] = pred
    return out


def score_fold(
    ws: WindowSet,
    fold: Fold,
    results: list[TrainResult],
    settings: Settings,
    trained_on: Fold,
    with_references: bool = True,
) -> FoldRecord:
    """A fold's candidates, baselines and references on its test origins (a horizon apart)."""
    t0 = time.perf_counter()
    fws = fold_windowset(ws, fold, settings)
    origins = forecast_origins(fws, "test")
    if not len(origins):
        raise DataValidationError(f"{ws.meta.name}: backtest fold {fold.index} holds no test window")
    y = fws.targets(origins)
    mask, scale = fws.target_mask(origins), mase_scale(fws)
    scores: dict[str, dict] = {}
    losses, val = {}, {}
    for r in results:
        run = quantile_predictor(r.model)
        pred, q = run(*fws.inputs(origins))
        levels = list(r.model.quantiles)
        sc = metrics(y, pred, scale, mask)
        if q is not None and levels:
            sc.update(quantile_scores(y, q, levels, scale, mask)[0])
        name = r.candidate.name
        scores[name], losses[name] = sc, window_losses(fws, origins, pred).tolist()
        yv, _ = forecast_windows(run, fws, fws.starts["val"])
        val[name] = evaluate_forecasts(fws, "val", yv)[0]["mase"]
    naive = _naive_family(fws, settings, origins)
    for name, pred in naive.items():
        scores[name], losses[name] = metrics(y, pred, scale, mask), window_losses(fws, origins, pred).tolist()
    bar = min(naive, key=lambda k: scores[k]["mase"]) if naive else "naive"
    per_series: dict[str, dict[str, float]] = {}
    if with_references and settings.evaluate.references and isinstance(fws, PanelWindowSet):
        for name, row in panel_references.reference_rows(fws, origins, settings).items():
            scores[f"ref_{name}"] = {k: v for k, v in row.items() if k not in ("per_series", "failed")}
            if row.get("per_series"):
                per_series[f"ref_{name}"] = row["per_series"]
    elif with_references and settings.evaluate.references:
        refs = classical.references(fws, origins, settings)
        for name, row in classical.reference_scores(fws, origins, refs).items():
            scores[f"ref_{name}"] = row
            ref = refs[name]
            if ref.ok and ref.pred is not None:
                losses[f"ref_{name}"] = window_losses(fws, origins, ref.pred).tolist()
    selected = min(val, key=lambda k: val[k])
    scores["selected"] = {**scores[selected], "candidate": selected}
    losses["selected"] = losses[selected]
    st = fws.meta.split_times
    if isinstance(fws, PanelWindowSet):  # per series instead of per origin: a panel has millions of origins
        for name, loss in losses.items():
            per_series[name] = panel_references.series_means(fws, origins, np.asarray(loss))
        losses = {}
    return FoldRecord(
        fold=fold,
        times=st,
        origins=int(len(origins)),
        scores=scores,
        val_mase=val,
        selected=selected,
        bar=bar,
        trained_on=[0, trained_on.val_start],
        origin_times=[]
        if fws.is_panel
        else [str(pd.Timestamp(fws.timestamps[s + fws.meta.lookback])) for s in origins],
        losses=losses,
        seconds=time.perf_counter() - t0,
        series=per_series,
    )


def run_fold(
    ws: WindowSet,
    fold: Fold,
    settings: Settings,
    refit: str,
    first: tuple[Fold, list[TrainResult]] | None,
    device: str = "cpu",
    on_epoch=None,
) -> tuple[FoldRecord, tuple[Fold, list[TrainResult]]]:
    """One fold: its candidates (trained on its rows, or the first fold's recalibrated on its validation rows) and
    their scores. Returns the record and what a calibration-only fold after it reuses."""
    t0 = time.perf_counter()
    fws = fold_windowset(ws, fold, settings)
    if refit == "retrain" or first is None:
        first = (fold, fit_candidates(fws, settings, device, on_epoch))
        results = first[1]
    else:
        results = recalibrated(first[1], fws, settings)
    rec = score_fold(ws, fold, results, settings, trained_on=first[0])
    rec.seconds = time.perf_counter() - t0
    return rec, first


def spread(records: list[FoldRecord]) -> dict[str, dict[str, dict[str, float]]]:
    """Each model's mean, std, min and max of every SPREAD metric over the folds that scored it."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    names = {n for r in records for n in r.scores}
    for n in sorted(names):
        for m in SPREAD:
            vals = [r.scores[n][m] for r in records if n in r.scores and m in r.scores[n]]
            if vals:
                a = np.asarray(vals, dtype=np.float64)
                out.setdefault(n, {})[m] = {
                    "mean": float(a.mean()),
                    "std": float(a.std()),
                    "min": float(a.min()),
                    "max": float(a.max()),
                    "folds": len(a),
                }
    return out


def run_backtest(
    ws: WindowSet,
    settings: Settings,
    k: int | None = None,
    refit: str | None = None,
    end: int | None = None,
    device: str = "cpu",
    on_fold=None,
    on_epoch=None,
) -> BacktestResult:
    """Every fold in order (module docstring); `on_fold(record)` after each."""
    t0 = time.perf_counter()
    refit = refit or settings.backtest.refit
    folds = plan(ws, settings, k, end)
    records, first = [], None
    for fold in folds:
        rec, first = run_fold(ws, fold, settings, refit, first, device, on_epoch)
        records.append(rec)
        if on_fold:
            on_fold(rec)
    return finish(ws, records, refit, folds[-1].test_end, time.perf_counter() - t0)


def finish(ws: WindowSet, records: list[FoldRecord], refit: str, end: int, seconds: float) -> BacktestResult:
    return BacktestResult(ws.meta.name, records, refit, end, spread(records), seconds)


def picture(result: BacktestResult, candidates_: list[str]):
    """Per-fold MASE of each candidate beside the fold's seasonal-naive bar (and MSTL), and the MASE of every test
    origin over the whole backtest span (a panel: the worst series fold by fold)."""
    if any(f.series for f in result.folds):
        table = result.series_table()
        return plots.panel_backtest(
            [r.to_dict() for r in result.folds],
            candidates_,
            f"{result.dataset}: backtest over {len(result.folds)} folds ({result.refit}), pooled over "
            f"{len(table)} series",
            list(table["series_id"][:3]),
        )
    return plots.backtest_errors(
        [r.to_dict() for r in result.folds],
        candidates_,
        f"{result.dataset}: backtest over {len(result.folds)} folds ({result.refit})",
    )


def summary(result: BacktestResult) -> str:
    """The table `cellcast backtest` prints: per fold the test MASE of each model, then the spread."""
    names = [n for n in result.folds[0].scores if n != "selected"]
    names = ["selected", *names]
    rows = [("model", *[f"fold {r.fold.index}" for r in result.folds], "mean", "std", "min", "max")]
    for n in names:
        cells = []
        for r in result.folds:
            sc = r.scores.get(n, {})
            cells.append(f"{sc['mase']:.3f}" if "mase" in sc else (sc.get("status", "-")[:12] if sc else "-"))
        sp = result.spread.get(n, {}).get("mase")
        label = n + (f" ({', '.join(r.selected for r in result.folds)})" if n == "selected" else "")
        rows.append((label, *cells, *([f"{sp[k]:.3f}" for k in ("mean", "std", "min", "max")] if sp else ["-"] * 4)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    cov = [
        f"fold {r.fold.index}: "
        + ", ".join(
            f"{k[len('coverage_') :]}% {100 * v:.1f}"
            for k, v in r.scores["selected"].items()
            if k.startswith("coverage_")
        )
        for r in result.folds
    ]
    lines += [
        "",
        "test MASE on each fold's origins a horizon apart; selected: the candidate its validation picks",
        "coverage of the selected candidate's intervals: " + "; ".join(cov),
    ]
    agg = result.panel_aggregate() if any(f.series for f in result.folds) else {}
    if agg:
        lines.append(
            f"per series (the selected candidate, mean over the folds each sat in): {agg['series']} series, MASE "
            f"mean {agg['mean_mase']:.3f}, median {agg['median_mase']:.3f} (bar mean {agg['mean_bar_mase']:.3f}); "
            f"beats the bar on most of its folds on {agg['share_beating_bar']:.0%} of the series; worst series "
            f"'{agg['worst_series']}' (MASE {agg['worst_mase']:.3f} against its bar's {agg['worst_bar_mase']:.3f})"
        )
    for r in result.folds:
        if isinstance(r.fold, PanelFold):
            lines.append(
                f"fold {r.fold.index}: each series trained on its rows before {r.fold.cuts[0]}, validation to "
                f"{r.fold.cuts[1]}, test {r.times['test'][0]} .. {r.times['test'][1]} "
                f"({len(r.series.get('selected') or {})} series, {r.origins} origins); bar {r.bar}"
            )
            continue
        rows_ = r.fold.rows()
        lines.append(
            f"fold {r.fold.index}: trained on rows {r.trained_on[0]}..{r.trained_on[1] - 1}, validation "
            f"{rows_['val'][0]}..{rows_['val'][1] - 1}, test {rows_['test'][0]}..{rows_['test'][1] - 1} "
            f"({r.times['test'][0]} .. {r.times['test'][1]}, {r.origins} origins); bar {r.bar}"
        )
    return "\n".join(lines)


def write_report(result: BacktestResult, settings: Settings, fig=None) -> Path:
    """reports/NAME/backtest.json and, given the picture, reports/NAME/backtest.png."""
    report, picture = backtest_paths(settings)
    report.parent.mkdir(parents=True, exist_ok=True)
    if fig is not None:
        fig.savefig(picture, dpi=110)
        result.picture = str(picture)
    report.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return report


def track(result: BacktestResult, ws: WindowSet, settings: Settings, fig, tags: dict | None = None) -> str:
    """One MLflow parent run `backtest-NAME`, a child run per fold (tags: its row ranges and times; metrics per
    model), the spread on the parent, the picture and the JSON as its artifacts."""
    from . import tracking
    from .lineage import lineage

    tags = (
        lineage(ws, settings)
        | {"cellcast.kind": "backtest", "backtest.refit": result.refit, "backtest.folds": str(len(result.folds))}
        | (tags or {})
    )
    with tracking.parent_run(ws.meta.name, run_name=f"backtest-{ws.meta.name}", tags=tags) as parent:
        result.parent_run_id = parent
        tracking.log_params(
            {
                "folds": len(result.folds),
                "refit": result.refit,
                "rows": result.end,
                "lookback": ws.meta.lookback,
                "horizon": ws.meta.horizon,
                "references": ",".join(settings.evaluate.references),
            }
        )
        for r in result.folds:
            rows = r.fold.rows()
            ftags = {
                "fold": r.fold.index,
                "selected": r.selected,
                "bar": r.bar,
                **{f"fold.{k}_rows": f"{a}..{b - 1}" for k, (a, b) in rows.items()},
                **{f"fold.{k}_time": f"{a} .. {b}" for k, (a, b) in r.times.items()},
                "fold.trained_on_rows": f"{r.trained_on[0]}..{r.trained_on[1] - 1}",
                **{f"ref.{n[4:]}.status": sc["status"] for n, sc in r.scores.items() if n.startswith("ref_")},
            }
            with tracking.candidate_run(f"fold-{r.fold.index}", tags=ftags):
                tracking.log_metrics(
                    {
                        f"{n}_{m}": v
                        for n, sc in r.scores.items()
                        for m, v in sc.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                    }
                    | {f"{n}_val_mase": v for n, v in r.val_mase.items()}
                    | {"origins": r.origins, "seconds": r.seconds}
                )
        tracking.log_metrics(
            {
                f"{n}_{m}_{s}": v[s]
                for n, ms in result.spread.items()
                for m, v in ms.items()
                for s in ("mean", "std", "min", "max")
            }
            | {"seconds": result.seconds}
        )
        if fig is not None:
            tracking.log_figure(fig, "backtest.png")
        tracking.log_dict(result.to_dict(), "backtest.json")
        agg = result.panel_aggregate() if any(f.series for f in result.folds) else {}
        if agg:
            tracking.log_metrics({f"panel_{k}": v for k, v in agg.items() if not isinstance(v, str)})
            tracking.set_tags({"panel.worst_series": agg["worst_series"]})
            tracking.log_table(result.series_table(), "backtest_series.json")
    return parent
