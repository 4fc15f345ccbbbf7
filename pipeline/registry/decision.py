"""Which candidate, and is it promoted: the best selected (validation or the backtest's means), the evidence
the policy weighs (per-window losses against the bar and the champion, interval scores) and the policy's
decision with a reason that says why (registry/promotion.py is the policy itself)."""

from __future__ import annotations

import numpy as np

from ..config import Settings
from ..data.panel_windows import PanelWindowSet
from ..data.windowset import WindowSet
from ..modeling import panel_eval
from ..modeling.evaluate import (
    empirical_band,
    empirical_interval_scores,
    evaluation_seasons,
    forecast_origins,
    forecast_windows,
    mase_scale,
    season_of,
    seasonal_naive,
    usable_seasons,
)
from ..modeling.quantiles import quantile_scores, window_winkler
from . import promotion
from .assessment import CandidateReport, adapts, walks_forward
from .champion import ChampionScore, losses_by_part
from .references import compare_panel_references


def select(ok: list[CandidateReport], selection: dict | None) -> tuple[CandidateReport, str]:
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
        cand, _ = losses_by_part(  # a part of the windows at a time: every test window's forecasts are GBs
            ws, starts, lambda s: forecast_windows(lambda xb, fb: (eng.predict(xb, fb), None), ws, s)[0]
        )
    else:
        cand = np.zeros(0)
    rivals = {}
    for name in _baseline_seasons(ws, settings):
        m = season_of(name)
        loss, finite = losses_by_part(ws, starts, lambda s, m=m: seasonal_naive(ws, s, m))
        if finite:  # a baseline that reads into a break is no bar on these windows
            rivals[name] = loss
    strongest = min(rivals, key=lambda k: rivals[k].mean()) if len(starts) and rivals else "naive"
    baseline = promotion.Comparison(
        strongest,
        cand,
        rivals.get(strongest, np.zeros(0)),
        settings.evaluate.promotion_margin,
        horizon=H,
        independent=_pooled_paths(ws, starts),
    )
    if champion is None or not champion.comparable:
        return baseline, None
    mine = np.isin(starts, champion.starts)
    return baseline, promotion.Comparison(
        f"champion v{champion.version}",
        cand[mine],
        np.asarray(champion.losses),
        horizon=H,
        independent=_pooled_paths(ws, starts[mine]),
    )


def _pooled_paths(ws: WindowSet, starts: np.ndarray) -> int | None:
    """A panel's independent paths among `starts`: each series' own, summed (its series pool their paths; the windows
    of every series over the horizon would count each series' last partial path as a part of the next one's). None
    for one series: counted from the windows and the horizon."""
    return ws.independent_paths(starts) if isinstance(ws, PanelWindowSet) else None


def interval_scores(ws: WindowSet, settings: Settings, best: CandidateReport, bar: str) -> promotion.IntervalScores:
    """Per interval of the candidate: its Winkler score beside the bar's empirical intervals'
    (evaluate.empirical_band) on every test window, as a Comparison of per-window scores (the means where the
    candidate kept none: a panel); {} when the gate is off or either has no score."""
    if not settings.evaluate.interval_score_gate or not best.quantiles or bar not in _baseline_seasons(ws, settings):
        return {}
    band = {
        "rank": settings.evaluate.calibration_rank,
        "walk": walks_forward(ws, settings),
        "scale": (best.calibration or {}).get("scale", "absolute"),
        "adapt": adapts(settings),
    }
    per_window: dict[str, np.ndarray] = {}
    if best.test_winkler:  # the per-window scores to test against the candidate's
        q = empirical_band(ws, season_of(bar), best.quantiles, **band)
        if q is None:
            return {}
        st = ws.starts["test"]
        y, mask, scale = ws.targets(st), ws.target_mask(st), mase_scale(ws)
        theirs = quantile_scores(y, q, list(best.quantiles), scale, mask)[0]
        per_window = window_winkler(y, q, list(best.quantiles), scale, mask)
    else:  # the means only (a panel: its band made and scored a part of the series at a time)
        theirs = empirical_interval_scores(ws, season_of(bar), best.quantiles, **band)
        if not theirs:
            return {}
    out: promotion.IntervalScores = {}
    for k, v in best.test.items():
        name = k[len("winkler_") :]
        if not k.startswith("winkler_") or k not in theirs:
            continue
        mine = best.test_winkler.get(name)
        if mine is not None and name in per_window and len(mine) == len(per_window[name]):
            out[name] = promotion.Comparison(bar, np.asarray(mine), per_window[name], horizon=ws.meta.horizon)
        else:
            out[name] = (float(v), float(theirs[k]))
    return out


def _baseline_seasons(ws: WindowSet, settings: Settings) -> list[str]:
    """The naive family the bar is chosen from: naive and the seasonal naives whose season validation sees."""
    seasons = evaluation_seasons(settings, ws)
    return ["naive"] + [f"seasonal_naive_{m}" for m in usable_seasons(ws, seasons, split="val")]


def decide(
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
        interval_score_tolerance=ev.interval_score_tolerance,
    )
    spaced = np.isin(starts, forecast_origins(ws, "test"))  # what the classical references are scored on
    if isinstance(ws, PanelWindowSet) and references and vs_baseline.n == len(starts):
        compare_panel_references(ws, references, starts[spaced], vs_baseline.candidate[spaced])
    if vs_baseline.n == len(starts) and spaced.any() and "candidate_mase" in decision.metrics:
        decision.metrics["candidate_mase_spaced"] = float(f"{vs_baseline.candidate[spaced].mean():.6g}")
        decision.metrics["baseline_mase_spaced"] = float(f"{vs_baseline.other[spaced].mean():.6g}")
    if champ_before and champ_before.reason:
        decision.reason += f" ({champ_before.reason})"
    if best.panel:  # the pooled test says better or not; the reason says across how many series, and the worst
        decision.reason += f"; {panel_eval.describe(best.panel['aggregate'])}"
    decision.reason += f" [{how}]"
    return decision
