"""The classical references (pipeline/modeling/classical.py): fitted once, rolled forward, and still honest (a forecast
from an origin never depends on the rows after it); fitted on the stretch since the last break; MSTL on a stretch too
short for its longest season."""

from __future__ import annotations

import numpy as np
import pytest

from cellcast.pipeline.modeling import classical

SEASONS = [24, 168]


def _hourly(n: int, seed: int = 0) -> np.ndarray:
    """A day and a week season over a random-walk level, positive (Theta may deseasonalise multiplicatively)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (
        100
        + 10 * np.sin(2 * np.pi * t / 24)
        + 6 * np.sin(2 * np.pi * t / 168)
        + 0.5 * np.cumsum(rng.standard_normal(n))
        + 0.3 * rng.standard_normal(n)
    )


def _run(series, origins, name, history=None, refit_every=None, seasons=SEASONS):
    ref = classical.reference_forecasts(
        series, np.asarray(origins), 24, [name], seasons, budget_s=60, history=history, refit_every=refit_every
    )[name]
    assert ref.ok, ref.status
    return ref


@pytest.mark.parametrize("name", ["mstl", "ets", "theta"])
@pytest.mark.parametrize("refit_every", [None, 2])
def test_a_forecast_from_an_origin_does_not_change_when_the_rows_after_it_change(name, refit_every):
    y = _hourly(800)
    origins = np.arange(600, 744, 24)
    a = _run(y, origins, name, history=400, refit_every=refit_every)
    cut = int(origins[3])
    other = y.copy()
    other[cut:] = np.random.default_rng(1).normal(300, 50, len(y) - cut)  # far from anything seen before
    b = _run(other, origins, name, history=400, refit_every=refit_every)
    assert np.array_equal(a.pred[:4], b.pred[:4])  # origins up to the cut read rows before it only
    assert not np.allclose(a.pred[4:], b.pred[4:])  # the later ones do read the new rows
    assert a.fits == (1 if refit_every is None else 3) and a.forecasts == len(origins)


@pytest.mark.parametrize("name", ["mstl", "ets", "theta"])
def test_the_first_origin_is_a_fit_on_its_history_and_refit_every_origin_is_the_per_origin_fit(name):
    y = _hourly(800)
    origins = np.array([600, 624])  # the first origin and one rolled on to: each fit costs seconds (ets)
    once = _run(y, origins, name, history=400)
    each = _run(y, origins, name, history=400, refit_every=1)
    for i, o in enumerate(origins):
        own = classical.forecast_one(name, y[o - 400 : o], SEASONS, 24)
        assert np.allclose(each.pred[i, :, 0], own, rtol=0, atol=1e-9)
    assert np.allclose(once.pred[0], each.pred[0], rtol=0, atol=1e-9)
    assert once.fits == 1 and each.fits == 2
    # rolled forward with fixed parameters: close to the refits, not the same forecasts
    assert not np.allclose(once.pred[1:], each.pred[1:], rtol=0, atol=1e-9)
    assert np.abs(once.pred - each.pred).max() < 0.2 * np.ptp(y)


def test_theta_rolls_its_exponential_smoothing_on_with_the_fitted_alpha():
    """At a later origin, Theta's rolled level is statsmodels' simple exponential smoothing of every row since the fit's
    first, from the level it started with, at the fitted alpha (no season: the level and the drift only)."""
    from statsmodels.tsa.forecasting.theta import ThetaModel
    from statsmodels.tsa.holtwinters import SimpleExpSmoothing

    y = _hourly(700, seed=3)
    roll = classical.fit_reference("theta", y[:500], [])
    fit = ThetaModel(y[:500], method="auto", deseasonalize=False).fit()
    assert np.allclose(roll(y[:500], 24), fit.forecast(24), rtol=0, atol=1e-9)
    alpha, b0 = fit.params["alpha"], fit.params["b0"]
    ses = SimpleExpSmoothing(y[:650], initialization_method="known", initial_level=y[0]).fit(
        smoothing_level=alpha, optimized=False
    )
    steps = np.arange(24) + 1 / alpha - (1 - alpha) ** 650 / alpha
    assert np.allclose(roll(y[:650], 24), np.asarray(ses.forecast(24)) + 0.5 * b0 * steps, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["mstl", "ets", "theta"])
def test_each_fit_reads_the_stretch_since_the_last_break_only(name):
    y = _hourly(1500, seed=2)
    y[300] = np.nan  # a break long before the first origin
    y[1100] = np.nan  # and one between two origins
    origins = np.arange(1000, 1400, 24)
    a = _run(y, origins, name)
    assert a.fits == 2  # once before the first origin, once on the stretch after the second break
    other = y.copy()
    other[:300] = -other[:300]  # what lies before the first break is never read
    assert np.array_equal(a.pred, _run(other, origins, name).pred)
    after = int(np.flatnonzero(origins > 1100)[0])
    other = y.copy()
    other[301:1100] *= 2  # after the second break, the first stretch is not read either
    b = _run(other, origins, name)
    assert np.array_equal(a.pred[after:], b.pred[after:]) and not np.allclose(a.pred[:after], b.pred[:after])


def test_mstl_fits_a_stretch_since_a_break_that_holds_its_longest_season_only_twice():
    """statsmodels' MSTL drops a period of half the series or more and then returns its one seasonal component as a
    single column: read as one column per asked period, that was `IndexError: index 1 is out of bounds for axis 1
    with size 1` on a stretch of exactly 2 x 168 hourly rows since a break."""
    from statsmodels.tsa.seasonal import MSTL

    y = _hourly(2000, seed=4)
    y[1000 - 336 - 1] = np.nan  # 336 rows since the break before the origin at row 1000
    with pytest.warns(UserWarning, match="larger than half the length"):  # the cause, still there
        assert np.asarray(MSTL(y[1000 - 336 : 1000], periods=SEASONS).fit().seasonal).ndim == 1
    assert classical.usable_seasons(336, SEASONS) == [24] and classical.usable_seasons(337, SEASONS) == SEASONS
    ref = _run(y, [1000, 1024, 1048], "mstl")
    assert np.array_equal(ref.pred[0, :, 0], classical.forecast_one("mstl", y[1000 - 336 : 1000], [24], 24))
    short = _hourly(2000, seed=5)
    short[1000 - 40 - 1] = np.nan  # 40 rows: no season fits twice, the level and trend only
    assert _run(short, [1000], "mstl").ok
    assert classical.usable_seasons(40, SEASONS) == []


def test_a_reference_that_runs_past_its_budget_says_so_in_one_line():
    y = _hourly(800)
    over = classical.reference_forecasts(y, np.arange(500, 740, 24), 24, ["ets"], SEASONS, budget_s=1e-4)["ets"]
    assert not over.ok and over.pred is None
    assert over.status.startswith("over budget: ") and "evaluate.reference_budget_s 0.0001" in over.status


def test_each_target_of_a_multi_target_series_is_fitted_on_its_own_column():
    y = np.stack([_hourly(800, seed=0), _hourly(800, seed=1) * 3], axis=1)
    origins = np.arange(600, 720, 24)
    both = classical.reference_forecasts(y, origins, 24, ["theta"], SEASONS, budget_s=60, history=400)["theta"]
    assert both.ok and both.fits == 2 and both.forecasts == 2 * len(origins)
    for t in range(2):
        assert np.array_equal(both.pred[:, :, t], _run(y[:, t], origins, "theta", history=400).pred[:, :, 0])
