"""Classical reference forecasts beside the candidates: MSTL, ETS and Theta (statsmodels: the only importer).

Each forecast origin gets its own fit on the target's history up to that origin only (from the last break, and at
most `history` rows), as bench/research/classical.py does with statsforecast (which cannot be installed here: it
pins pandas < 3). What each reference is:

- mstl: statsmodels' MSTL over the natural seasons the history holds twice, with statsforecast's seasonal smoother
  (degree 0); each seasonal component is repeated
  from its last cycle, and the deseasonalised rest (trend + remainder) is forecast by exponential smoothing with
  no season, level only or a damped additive trend, whichever has the lower AIC (statsforecast's MSTL uses
  AutoETS(ZZN) there).
- ets: Holt-Winters exponential smoothing with an additive season (the shortest natural season), no trend or a
  damped additive trend chosen by AIC: a small AutoETS.
- theta: statsmodels' ThetaModel with that season (deseasonalised multiplicatively when it can, else additively).

They are reference rows, not bars: promotion's bar stays the seasonal-naive family (docs/forecasting.md). A
reference that fails, or whose fits would run past `budget_s`, is reported with its status and no score; it never
fails the caller.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

REFERENCES = ("mstl", "ets", "theta")


@dataclass
class Reference:
    name: str
    status: str  # ok | failed: ... | over budget: ...
    pred: np.ndarray | None = None  # (n origins, H, T) in the data's units
    seconds: float = 0.0
    fits: int = 0
    seasons: list[int] = field(default_factory=list)
    history: int | None = None  # rows of history each fit was given at most (None: all)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _ets_auto(y: np.ndarray, season: int | None):
    """Exponential smoothing with an additive season (when given), no trend or a damped additive trend: the
    lower AIC of the two fits."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    best = None
    for trend in (None, "add"):
        kw = {"seasonal": "add", "seasonal_periods": season} if season else {}
        fit = ExponentialSmoothing(y, trend=trend, damped_trend=trend is not None, **kw).fit()
        if best is None or (np.isfinite(fit.aic) and fit.aic < best.aic):
            best = fit
    return best


def _mstl(y: np.ndarray, seasons: list[int], h: int) -> np.ndarray:
    from statsmodels.tsa.seasonal import MSTL

    if not seasons:
        return np.asarray(_ets_auto(y, None).forecast(h))
    # seasonal_deg 0 (a moving-average seasonal smoother: seasons that change slowly), as statsforecast's and R's
    # mstl fit it; statsmodels' default (local-linear) follows the last cycles' noise: on chicago's 61 test origins
    # (a sample of 21) MASE 0.287 against 0.365
    res = MSTL(y, periods=seasons if len(seasons) > 1 else seasons[0], stl_kwargs={"seasonal_deg": 0}).fit()
    seasonal = np.asarray(res.seasonal).reshape(len(y), -1)
    steps = np.arange(h)
    fc = np.zeros(h)
    for j, m in enumerate(seasons):  # the last cycle of each component, repeated
        fc += seasonal[len(y) - m + (steps % m), j]
    rest = y - seasonal.sum(axis=1)
    return fc + np.asarray(_ets_auto(rest, None).forecast(h))


def _theta(y: np.ndarray, season: int | None, h: int) -> np.ndarray:
    from statsmodels.tsa.forecasting.theta import ThetaModel

    kw = {"period": season} if season else {"deseasonalize": False}
    method = "auto" if (y > 0).all() else "additive"
    return np.asarray(ThetaModel(y, method=method, **kw).fit().forecast(h))


def forecast_one(name: str, y: np.ndarray, seasons: list[int], h: int) -> np.ndarray:
    """One reference's forecast of the next `h` steps of `y` (float64, no NaN), with the `seasons` that fit it."""
    usable = [m for m in seasons if m > 1 and len(y) >= 2 * m]
    if name == "mstl":
        return _mstl(y, usable, h)
    first = usable[0] if usable else None
    if name == "ets":
        return np.asarray(_ets_auto(y, first).forecast(h))
    if name == "theta":
        return _theta(y, first, h)
    raise ValueError(f"unknown reference '{name}' (one of {', '.join(REFERENCES)})")


def _history(series: np.ndarray, end: int, history: int | None) -> np.ndarray:
    """The observations before row `end`, from the last break (a NaN row), the last `history` rows at most."""
    y = series[:end]
    nan = np.flatnonzero(~np.isfinite(y))
    if len(nan):
        y = y[nan[-1] + 1 :]
    return y[-history:] if history else y


def reference_forecasts(
    series: np.ndarray,
    origins: np.ndarray,
    horizon: int,
    names: list[str],
    seasons: list[int],
    budget_s: float,
    history: int | None = None,
) -> dict[str, Reference]:
    """Each reference's forecasts (n, horizon, T) from every origin: origin o forecasts rows [o, o + horizon) from
    rows before o of `series` (rows, T). A reference whose first three fits say it cannot finish within `budget_s`,
    or that passes it, stops there; one that raises is reported failed."""
    series = np.asarray(series, dtype=np.float64)
    if series.ndim == 1:
        series = series[:, None]
    origins = np.asarray(origins, dtype=np.int64)
    out = {}
    for name in names:
        t0 = time.perf_counter()
        preds = np.zeros((len(origins), horizon, series.shape[1]))
        status, fits = "ok", 0
        total = len(origins) * series.shape[1]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # statsmodels' convergence chatter, one per fit
                for i, o in enumerate(origins):
                    for t in range(series.shape[1]):
                        y = _history(series[:, t], int(o), history)
                        if len(y) < 4:
                            raise ValueError(f"{len(y)} observations before origin row {int(o)}")
                        preds[i, :, t] = forecast_one(name, y, seasons, horizon)
                        fits += 1
                    spent = time.perf_counter() - t0
                    # three fits say what the rest would cost: a reference that cannot finish stops early
                    if spent > budget_s or (fits >= 3 and fits < total and spent / fits * total > budget_s):
                        status = (
                            f"over budget: {spent:.1f}s for {fits} of {total} fits "
                            f"(evaluate.reference_budget_s {budget_s:g})"
                        )
                        break
        except Exception as e:  # a reference is evidence beside the run, never a reason to fail it
            status = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
        ok = status == "ok" and np.isfinite(preds).all()
        if status == "ok" and not ok:
            status = "failed: non-finite forecasts"
        out[name] = Reference(
            name, status, preds if ok else None, time.perf_counter() - t0, fits, list(seasons), history
        )
    return out


def history_rows(settings, seasons: list[int]) -> int | None:
    """The history each fit sees (evaluate.reference_history): auto = 8 cycles of the longest season (None: all)."""
    h = settings.evaluate.reference_history
    if h != "auto":
        return int(h)
    return 8 * max(seasons) if seasons else None


def references(ws, starts: np.ndarray, settings, names: list[str] | None = None) -> dict[str, Reference]:
    """The references of `evaluate.references` forecasting the windows of `ws` (a WindowSet) at `starts`, each fit
    on the target rows before the window's first target."""
    names = list(settings.evaluate.references if names is None else names)
    seasons = settings.evaluate.seasons if settings.evaluate.seasons != "auto" else ws.meta.seasons
    seasons = sorted(m for m in seasons if m > 1)  # each fit uses those its history holds twice (forecast_one)
    return reference_forecasts(
        ws.target_series(),
        np.asarray(starts) + ws.meta.lookback,
        ws.meta.horizon,
        names,
        seasons,
        settings.evaluate.reference_budget_s,
        history_rows(settings, seasons),
    )


def reference_scores(ws, starts: np.ndarray, refs: dict[str, Reference]) -> dict[str, dict]:
    """Each reference's scores on the windows at `starts` (the metrics of modeling/evaluate.py), or its status."""
    from .evaluate import mase_scale, metrics

    _, y = ws.batch(starts)
    mask, scale = ws.target_mask(starts), mase_scale(ws)
    out = {}
    for name, r in refs.items():
        row = {
            "status": r.status,
            "seconds": round(r.seconds, 2),
            "fits": r.fits,
            "seasons": r.seasons,
            "history": r.history,
            "windows": int(len(starts)),
        }
        if r.ok and r.pred is not None:  # ok: forecast every origin
            row.update(metrics(y, r.pred, scale, mask))
        out[name] = row
    return out
