"""Classical reference forecasts beside the candidates: MSTL, ETS and Theta (statsmodels: the only importer).

Each reference is fitted once, on the target's history before the first forecast origin (from the last break, and at
most `history` rows), and rolled forward: at every later origin its parameters stay as fitted and its states are
filtered through the rows up to that origin (never past it), then it forecasts from there. It is fitted again at the
first origin after a break (on the rows since it) and, when `refit_every` is set, every that many origins. Refitting
at every origin (what statsforecast's cross-validation does; statsforecast itself pins pandas < 3, so statsmodels
fits them here) cost more than training the candidates. What each reference is:

- mstl: statsmodels' MSTL over the natural seasons the history holds more than twice, with statsforecast's seasonal
  smoother (degree 0); each seasonal component is repeated from its last fitted cycle, and the deseasonalised rest
  (trend + remainder) is forecast by exponential smoothing with no season, level only or a damped additive trend,
  whichever has the lower AIC (statsforecast's MSTL uses AutoETS(ZZN) there).
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
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

REFERENCES = ("mstl", "ets", "theta")

# a fitted reference: (the rows from its fit's first row up to an origin, horizon) -> the forecast from that origin
Roll = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class Reference:
    name: str
    status: str  # ok | failed: ... | over budget: ...
    pred: np.ndarray | None = None  # (n origins, H, T) in the data's units
    seconds: float = 0.0
    fits: int = 0
    seasons: list[int] = field(default_factory=list)
    history: int | None = None  # rows of history each fit was given at most (None: all)
    forecasts: int = 0  # origins x targets forecast (each from the fit before it, rolled forward)
    refit_every: int | None = None  # origins between fits (None: fitted once, and again after a break)

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


def _ets_roll(fit) -> Roll:
    """The fitted exponential smoothing as a filter with its parameters and initial states fixed: given the rows from
    the fit's first row up to an origin, the states there and the forecast from them (no optimisation: a pass of
    statsmodels' own recursions; on the fit's own rows it returns the fit's forecast exactly)."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    m, p = fit.model, fit.params
    trend, seasonal = m.trend is not None, m.seasonal is not None

    def roll(y: np.ndarray, h: int) -> np.ndarray:
        model = ExponentialSmoothing(
            y,
            trend=m.trend,
            damped_trend=m.damped_trend,
            seasonal=m.seasonal,
            seasonal_periods=m.seasonal_periods,
            initialization_method="known",
            initial_level=p["initial_level"],
            initial_trend=p["initial_trend"] if trend else None,
            initial_seasonal=p["initial_seasons"] if seasonal else None,
        )
        res = model.fit(
            smoothing_level=p["smoothing_level"],
            smoothing_trend=p["smoothing_trend"] if trend else None,
            smoothing_seasonal=p["smoothing_seasonal"] if seasonal else None,
            damping_trend=p["damping_trend"] if m.damped_trend else None,
            optimized=False,
        )
        return np.asarray(res.forecast(h))

    return roll


def _fit_ets(y: np.ndarray, season: int | None) -> Roll:
    return _ets_roll(_ets_auto(y, season))


def _fit_mstl(y: np.ndarray, seasons: list[int]) -> Roll:
    """MSTL on `y`; each seasonal component carried forward from its last cycle (past the fit's rows too: the seasonal
    shapes are those of the fit), the deseasonalised rest rolled forward by its exponential smoothing."""
    import pandas as pd
    from statsmodels.tsa.seasonal import MSTL

    if not seasons:
        return _fit_ets(y, None)
    # seasonal_deg 0 (a moving-average seasonal smoother: seasons that change slowly), as statsforecast's and R's
    # mstl fit it; statsmodels' default (local-linear) follows the last cycles' noise: on chicago's 61 test origins
    # (a sample of 21) MASE 0.287 against 0.365
    model = MSTL(pd.Series(y), periods=list(seasons), stl_kwargs={"seasonal_deg": 0})
    res = model.fit()
    # MSTL drops the periods its series does not hold twice (warning only) and returns one column, not a frame, when
    # one is left: the components are read against the periods it kept
    kept = [int(m) for m in model.periods]
    seasonal = np.asarray(res.seasonal, dtype=np.float64).reshape(len(y), len(kept))
    n0 = len(y)
    last = [seasonal[n0 - m :, j] for j, m in enumerate(kept)]  # each component's last cycle

    def season_at(rows: np.ndarray) -> np.ndarray:
        """The seasonal sum at row offsets from the fit's first row: fitted inside the fit, repeated past it."""
        out = np.zeros(len(rows))
        inside = rows < n0
        out[inside] = seasonal[rows[inside]].sum(axis=1)
        past = rows[~inside] - n0
        for j, m in enumerate(kept):
            out[~inside] += last[j][past % m]
        return out

    rest = _ets_roll(_ets_auto(y - seasonal.sum(axis=1), None))

    def roll(y_now: np.ndarray, h: int) -> np.ndarray:
        n = len(y_now)
        return rest(y_now - season_at(np.arange(n)), h) + season_at(np.arange(n, n + h))

    return roll


def _fit_theta(y: np.ndarray, season: int | None) -> Roll:
    """statsmodels' ThetaModel on `y`; rolled forward with its alpha, drift b0 and seasonal indices fixed: the
    simple exponential smoothing of the deseasonalised rows run on to the origin, the drift term at that length."""
    from scipy.signal import lfilter
    from statsmodels.tsa.forecasting.theta import ThetaModel

    kw = {"period": season} if season else {"deseasonalize": False}
    method = "auto" if (y > 0).all() else "additive"
    model = ThetaModel(y, method=method, **kw)
    res = model.fit()
    b0, alpha = float(res.params["b0"]), float(res.params["alpha"])
    period = season or 1
    mult = model.method.startswith("mul")  # the method the decomposition settled on (auto: mul unless it cannot)
    # the seasonal index of each phase, read from the forecast's components (neutral when no season was detected)
    comp = np.asarray(res.forecast_components(period)["seasonal"], dtype=np.float64)
    index = np.empty(period)
    index[(len(y) + np.arange(period)) % period] = comp

    def roll(y_now: np.ndarray, h: int) -> np.ndarray:
        n = len(y_now)
        s_in = index[np.arange(n) % period]
        x = y_now / s_in if mult else y_now - s_in
        # SES with the level started at the first row (statsmodels' ThetaModel: initialization 'known', y[0])
        level = lfilter([alpha], [1.0, alpha - 1.0], x, zi=[(1.0 - alpha) * x[0]])[0][-1]
        steps = np.arange(h, dtype=np.float64)
        if alpha > 0:
            steps += 1 / alpha - (1 - alpha) ** n / alpha
        fc = 0.5 * b0 * steps + level  # theta = 2: the trend weight (theta - 1) / theta
        s_out = index[(n + np.arange(h)) % period]
        return fc * s_out if mult else fc + s_out

    return roll


def usable_seasons(n: int, seasons: list[int]) -> list[int]:
    """The seasons a history of `n` rows holds more than twice (statsmodels' MSTL drops a period of n / 2 or more)."""
    return [m for m in sorted(seasons) if m > 1 and n > 2 * m]


def fit_reference(name: str, y: np.ndarray, seasons: list[int]) -> Roll:
    """One reference fitted on `y` (float64, no NaN), with the `seasons` it holds twice: a function of the rows from
    `y`'s first row up to an origin (`y` itself, then `y` and the rows after it) and a horizon, that forecasts from
    that origin with the fit's parameters fixed."""
    usable = usable_seasons(len(y), seasons)
    if name == "mstl":
        return _fit_mstl(y, usable)
    first = usable[0] if usable else None
    if name == "ets":
        return _fit_ets(y, first)
    if name == "theta":
        return _fit_theta(y, first)
    raise ValueError(f"unknown reference '{name}' (one of {', '.join(REFERENCES)})")


def forecast_one(name: str, y: np.ndarray, seasons: list[int], h: int) -> np.ndarray:
    """One reference's forecast of the next `h` steps of `y`, fitted on `y` itself."""
    return fit_reference(name, y, seasons)(y, h)


def _segment_starts(series: np.ndarray) -> np.ndarray:
    """For each row end e (0..len), the first row of the stretch without a break (a NaN row) that ends before e."""
    bad = ~np.isfinite(series)
    last = np.where(bad, np.arange(len(series)), -1)
    return np.concatenate([[0], np.maximum.accumulate(last) + 1])


def reference_forecasts(
    series: np.ndarray,
    origins: np.ndarray,
    horizon: int,
    names: list[str],
    seasons: list[int],
    budget_s: float,
    history: int | None = None,
    refit_every: int | None = None,
) -> dict[str, Reference]:
    """Each reference's forecasts (n, horizon, T) from every origin: origin o forecasts rows [o, o + horizon) of
    `series` (rows, T) from its rows before o only.

    A reference is fitted on the rows before the first origin (since the last break, the last `history` at most) and
    rolled forward: at each later origin its parameters stay fixed and its states are filtered through the rows up to
    that origin. It is fitted again on the rows before an origin when a break lies between its fit and that origin
    (the rows since the break), and every `refit_every` origins when set (None: only then). A reference that spends
    `budget_s`, or whose first origins say it would, stops there; one that raises is reported failed."""
    series = np.asarray(series, dtype=np.float64)
    if series.ndim == 1:
        series = series[:, None]
    origins = np.asarray(origins, dtype=np.int64)
    out = {}
    for name in names:
        t0 = time.perf_counter()
        preds = np.zeros((len(origins), horizon, series.shape[1]))
        status, fits, fit_s, done = "ok", 0, 0.0, 0
        total = len(origins) * series.shape[1]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # statsmodels' convergence chatter, one per fit
                for t in range(series.shape[1]):
                    col, seg = series[:, t], _segment_starts(series[:, t])
                    fit_start, roll, since = -1, None, 0
                    for i, o in enumerate(origins):
                        o = int(o)
                        if roll is None or seg[o] > fit_start or (refit_every and since >= refit_every):
                            fit_start = max(int(seg[o]), o - history) if history else int(seg[o])
                            if o - fit_start < 4:
                                raise ValueError(f"{o - fit_start} observations before origin row {o}")
                            t1 = time.perf_counter()
                            roll, since = fit_reference(name, col[fit_start:o], seasons), 0
                            fits, fit_s = fits + 1, fit_s + time.perf_counter() - t1
                        preds[i, :, t] = roll(col[fit_start:o], horizon)
                        since, done = since + 1, done + 1
                        spent = time.perf_counter() - t0
                        # what the rest would cost: the rolls so far per origin, a fit per refit still to come
                        # (and the first fit of each target still to come)
                        left = total - done
                        rolls = (spent - fit_s) / done
                        refits = (-(-left // refit_every) if refit_every else 0) + series.shape[1] - t - 1
                        if spent > budget_s or (done >= 3 and spent + left * rolls + refits * fit_s / fits > budget_s):
                            status = (
                                f"over budget: {spent:.1f}s for {done} of {total} forecasts ({fits} fits) "
                                f"(evaluate.reference_budget_s {budget_s:g})"
                            )
                            break
                    if status != "ok":
                        break
        except Exception as e:  # a reference is evidence beside the run, never a reason to fail it
            status = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
        ok = status == "ok" and np.isfinite(preds).all()
        if status == "ok" and not ok:
            status = "failed: non-finite forecasts"
        out[name] = Reference(
            name,
            status,
            preds if ok else None,
            time.perf_counter() - t0,
            fits,
            list(seasons),
            history,
            done,
            refit_every,
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
    from .evaluate import evaluation_seasons  # imported where used, as the module's other evaluate imports

    names = list(settings.evaluate.references if names is None else names)
    seasons = evaluation_seasons(settings, ws)
    seasons = sorted(m for m in seasons if m > 1)  # each fit uses those its history holds twice (forecast_one)
    return reference_forecasts(
        ws.target_series(),
        np.asarray(starts) + ws.meta.lookback,
        ws.meta.horizon,
        names,
        seasons,
        settings.evaluate.reference_budget_s,
        history_rows(settings, seasons),
        settings.evaluate.reference_refit_every,
    )


def reference_scores(ws, starts: np.ndarray, refs: dict[str, Reference]) -> dict[str, dict]:
    """Each reference's scores on the windows at `starts` (the metrics of modeling/evaluate.py), or its status."""
    from .evaluate import mase_scale, metrics

    y = ws.targets(starts)
    mask, scale = ws.target_mask(starts), mase_scale(ws)
    out = {}
    for name, r in refs.items():
        row = {
            "status": r.status,
            "seconds": round(r.seconds, 2),
            "fits": r.fits,
            "seasons": r.seasons,
            "history": r.history,
            "refit_every": r.refit_every,
            "windows": int(len(starts)),
        }
        if r.ok and r.pred is not None:  # ok: forecast every origin
            row.update(metrics(y, r.pred, scale, mask))
        out[name] = row
    return out
