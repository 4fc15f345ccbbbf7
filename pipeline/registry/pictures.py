"""The training run's pictures on its MLflow parent run: forecast vs actual with the bands, loss curves, error
by horizon step; for a panel, the best / median / worst series and the MASE across series."""

from __future__ import annotations

import pandas as pd

from ..data.panel_windows import PanelWindowSet
from ..data.windowset import WindowSet
from ..modeling import plots
from ..modeling.evaluate import season_of, seasonal_naive
from ..modeling.quantiles import interval_name, intervals
from ..modeling.train import TrainResult, predictor, quantile_predictor
from . import tracking
from .assessment import Baselines, CandidateReport


def log_pictures(ws: WindowSet, base: Baselines, results: list[TrainResult], reports: list[CandidateReport]) -> None:
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

        def unscale(y, starts=starts):
            return ws.unscale_targets(y, starts)[:, :, 0]

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
