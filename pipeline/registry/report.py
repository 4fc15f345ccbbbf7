"""Scores of a registered model on the current test split, as files DVC reads:
`reports/NAME/metrics.json` (`dvc metrics show`) and `reports/NAME/plots/*.csv` (`dvc plots show`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..catalog import metrics_path, plots_dir, train_summary_path
from ..config import Settings
from ..data.window import load_windows
from ..data.windowset import WindowSet
from ..errors import CellcastError
from ..modeling.evaluate import evaluate_forecasts, forecast_windows, season_of, seasonal_naive, targets_after
from . import tracking


def _unseen(ws: WindowSet, until: str | None, version: int) -> WindowSet:
    """`ws` with only the test windows whose targets come after the rows the model trained on (a version
    trained on newer data than these windows would be scored on what it learnt)."""
    starts = ws.starts["test"]
    if until is None:
        return ws
    keep = starts[targets_after(ws, starts, until)]
    if len(keep) == len(starts):
        return ws
    if not len(keep):
        raise CellcastError(
            f"{ws.meta.name}: v{version} was trained on rows up to {until}, after every test "
            f"window of the current window set: window newer data to score it"
        )
    return ws.with_starts(test=keep)  # the fill mask and the known-future table come along


def evaluate_registered(settings: Settings, alias: str = "champion") -> dict:
    from ..engine.inference import OnnxForecaster
    from .assessment import baselines
    from .champion import trained_until

    ws = load_windows(settings)
    tracking.configure()
    # a missing alias or version is download_model's one-line NoChampionError / NotFoundError
    path, info = tracking.download_model(settings.model_name, int(alias) if alias.isdigit() else alias)
    eng = OnnxForecaster.from_path(path, device="cpu")
    ws = _unseen(ws, trained_until(eng.metadata, info.tags), info.version)
    try:  # the model's own known-future columns, computed for these rows
        table = ws.future_table_for(eng.future_names, eng.future_kinds, eng.calendar) if eng.future_name else None
    except ValueError as e:
        raise CellcastError(f"{ws.meta.name}: v{info.version} cannot be scored on this window set: {e}") from None
    pred, q = forecast_windows(lambda x, f: eng.predict_all(x, f)[:2], ws, ws.starts["test"], table=table)
    test, by_step = evaluate_forecasts(ws, "test", pred, q, eng.quantiles)
    base = baselines(ws, settings)  # on the same test windows
    best = base.test.best
    # the model's figures, its interval coverage and width (80%, 90%), Winkler score, pinball and CRPS among them
    out = {
        "metrics": {
            "model": {
                "version": info.version,
                "aliases": info.aliases,
                **test,
                "test_windows": int(len(ws.starts["test"])),
                "quantiles": eng.quantiles,
            },
            "baselines": dict(base.test.scores),
            "best_baseline": best,
            "beats_best_baseline_by_pct": round(100 * (1 - test["mase"] / base.test.best_mase), 2),
        }
    }
    metrics, plots = metrics_path(settings), plots_dir(settings)
    refs = _references(train_summary_path(settings))
    if refs:  # the training run's classical reference rows (its promotion origins): beside the model in `dvc metrics`
        out["metrics"]["references"] = refs
    plots.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps(out["metrics"], indent=2))
    with open(plots / "error_by_horizon.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "model", best])
        for i, (a, b) in enumerate(zip(by_step, base.test.by_step[best])):
            w.writerow([i + 1, f"{a:.6g}", f"{b:.6g}"])
    m = ws.meta
    starts = ws.starts["test"][:: m.horizon]  # tile the test range with whole forecasts
    snaive = seasonal_naive(ws, starts, season_of(best))
    tiled = pred[:: m.horizon]
    qt = None if q is None else q[:: m.horizon]
    bands = [] if qt is None else [(f"q{lv:g}", j) for j, lv in enumerate(eng.quantiles) if lv != 0.5]
    with open(plots / "forecast_vs_actual.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "actual", "model", best, *[name for name, _ in bands]])
        for k, s in enumerate(starts):
            for h in range(m.horizon):
                row = s + m.lookback + h
                w.writerow(
                    [
                        str(ws.timestamps[row].astype("datetime64[s]")),
                        f"{ws.values[row, m.target_idx[0]]:.6g}",
                        f"{tiled[k, h, 0]:.6g}",
                        f"{snaive[k, h, 0]:.6g}",
                        *[f"{qt[k, h, 0, j]:.6g}" for _, j in bands if qt is not None],
                    ]
                )
    out["paths"] = {"metrics": str(metrics), "plots": str(plots)}
    return out


def _references(summary: Path) -> dict:
    """The reference rows of the last training run (reports/NAME/train_summary.json, the evaluate stage's dependency):
    per reference its test scores on the promotion origins, or its status."""
    if not summary.is_file():
        return {}
    try:
        refs = json.loads(summary.read_text()).get("references") or {}
    except (OSError, ValueError):
        return {}
    keep = ("mase", "smape", "mae", "rmse", "windows", "seconds", "fits")
    return {k: {"status": v.get("status"), **{m: v[m] for m in keep if m in v}} for k, v in refs.items()}
