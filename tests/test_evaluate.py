"""Metrics and baselines, checked against values worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from cellcast.pipeline.config import Params
from cellcast.pipeline.data.window import build_windows
from cellcast.pipeline.modeling.evaluate import (
    baseline_names,
    empirical_interval_scores,
    evaluate_baselines,
    forecast_origins,
    mase_scale,
    metrics,
    seasonal_naive,
    usable_seasons,
    window_losses,
)


def test_metrics_by_hand():
    y = np.array([[[1.0], [2.0]], [[3.0], [4.0]]])
    p = np.array([[[2.0], [2.0]], [[3.0], [2.0]]])
    m = metrics(y, p, np.array([0.5]))
    assert m["mae"] == pytest.approx(0.75)
    assert m["rmse"] == pytest.approx(np.sqrt((1 + 0 + 0 + 4) / 4))
    assert m["mase"] == pytest.approx(1.5)
    assert m["smape"] == pytest.approx(100 * np.mean([2 / 3, 0, 0, 2 * 2 / 6]))


def _ws(values, lookback=6, horizon=3, freq="h"):
    df = pd.DataFrame({"timestamp": pd.date_range("2021-01-01", periods=len(values), freq=freq), "y": values})
    # hand-sized series: the data rule on test windows (ingest.min_test_horizons) is not what these tests check
    s = Params(
        window={"lookback": lookback, "horizon": horizon, "val_fraction": 0.2, "test_fraction": 0.2},
        ingest={"min_test_horizons": 1},
    ).for_dataset("t")
    return build_windows(df, variables=["y"], targets=["y"], freq=freq, settings=s)


def test_seasonal_naive_repeats_the_last_observed_season():
    ws = _ws(np.arange(60, dtype=float))
    s = ws.starts["test"][:1]
    L = ws.meta.lookback
    last = s[0] + L - 1
    np.testing.assert_array_equal(seasonal_naive(ws, s, 1)[0, :, 0], [last] * 3)
    # season 2 with horizon 3: steps read rows last-1, last, last-1
    np.testing.assert_array_equal(seasonal_naive(ws, s, 2)[0, :, 0], [last - 1, last, last - 1])


def test_a_perfectly_periodic_series_is_solved_by_its_season():
    t = np.arange(400)
    ws = _ws(np.sin(2 * np.pi * t / 24) + 5, lookback=30, horizon=6)
    rep = evaluate_baselines(ws, "test", usable_seasons(ws, [24]))
    assert rep.best == "seasonal_naive_24"
    assert rep.scores["seasonal_naive_24"]["mase"] < 1e-6 < rep.scores["naive"]["mase"]


def test_forecast_origins_walked_a_chunk_at_a_time_are_a_horizon_apart_whatever_the_chunk():
    ws = _ws(np.arange(200, dtype=float), lookback=6, horizon=3)
    # the test starts with holes (a panel's series boundaries and breaks): taken at least a horizon apart, greedily
    ws.starts["test"] = np.asarray([0, 1, 2, 3, 4, 9, 10, 11, 12, 20, 21, 30], dtype=ws.starts["test"].dtype)
    want = [0, 3, 9, 12, 20, 30]
    for chunk in (1, 2, 5, 1 << 20):
        got = forecast_origins(ws, "test", chunk=chunk)
        assert got.tolist() == want and got.dtype == ws.starts["test"].dtype


def test_mase_scale_is_the_one_step_naive_mae_on_train_rows():
    ws = _ws(np.array([0.0, 2.0] * 50))
    assert mase_scale(ws)[0] == pytest.approx(2.0)


def test_baseline_names():
    assert baseline_names([48, 336]) == {"naive": 1, "seasonal_naive_48": 48, "seasonal_naive_336": 336}


def test_a_season_longer_than_the_lookback_is_a_bar_where_history_allows():
    t = np.arange(2000)
    ws = _ws(np.sin(2 * np.pi * t / 365) + 0.01 * t, lookback=20, horizon=5)
    assert usable_seasons(ws, [7, 365], split="train") == [7]
    assert usable_seasons(ws, [7, 365], split="val") == [7, 365]
    rep = evaluate_baselines(ws, "test", [7, 365])
    assert "seasonal_naive_365" in rep.scores


def test_a_baseline_reading_into_a_break_is_reported_but_is_not_the_bar():
    t = np.arange(600)
    y = np.sin(2 * np.pi * t / 24) + 5 + 0.001 * t
    y[440:460] = np.nan  # a break kept by the `segment` policy, before the test rows
    ws = _ws(y, lookback=30, horizon=6)
    assert ws.meta.bounds["test"] == 480 and len(ws.starts["test"])
    rep = evaluate_baselines(ws, "test", [24, 40])
    assert 0 < rep.scores["seasonal_naive_40"]["coverage"] < 1
    assert np.isfinite(rep.scores["seasonal_naive_40"]["mase"])
    assert rep.best != "seasonal_naive_40" and rep.scores[rep.best]["coverage"] == 1.0


def test_filled_targets_are_not_scored():
    y = np.array([[[1.0], [2.0]], [[3.0], [4.0]]])
    p = np.array([[[1.0], [9.0]], [[3.0], [4.0]]])
    mask = np.array([[[True], [False]], [[True], [True]]])  # the 2.0 was a filled point
    m = metrics(y, p, np.array([1.0]), mask)
    assert m["mae"] == 0 and m["rmse"] == 0 and m["mase"] == 0 and m["smape"] == 0
    assert metrics(y, p, np.array([1.0]))["mae"] == pytest.approx(7 / 4)


def test_evaluation_and_baselines_skip_filled_targets_and_the_mase_scale_filled_steps():
    from cellcast.pipeline.modeling.evaluate import evaluate_forecasts

    n = 120
    df = pd.DataFrame({"timestamp": pd.date_range("2021-01-01", periods=n, freq="h"), "y": np.full(n, 5.0)})
    df.loc[::7, "y"] = 6.0
    df["filled:y"] = False
    df.loc[100:101, "y"] = 500.0  # filled cells with a value no forecast would match
    df.loc[100:101, "filled:y"] = True
    s = Params(window={"lookback": 6, "horizon": 3}, ingest={"min_test_horizons": 1}).for_dataset("t")
    ws = build_windows(df, variables=["y"], targets=["y"], freq="h", settings=s)
    _, y = ws.batch(ws.starts["test"])
    pred = np.where(y == 500.0, 0.0, y)  # exact on every observed target
    test, by_step = evaluate_forecasts(ws, "test", pred)
    assert test["mae"] == 0 and max(by_step) == 0
    base = evaluate_baselines(ws, "test", [])
    assert base.scores["naive"]["mae"] < 1  # the 500s are not counted against it either
    df.loc[20:21, "y"], df.loc[20:21, "filled:y"] = 500.0, True  # a fill among the training rows
    ws2 = build_windows(df, variables=["y"], targets=["y"], freq="h", settings=s)
    y = df["y"].where(~df["filled:y"]).to_numpy()[: ws2.meta.bounds["val"]]
    d = np.abs(np.diff(y))
    assert mase_scale(ws2)[0] == pytest.approx(np.nanmean(d)) and mase_scale(ws2)[0] < 1  # 500s in it: ~20


def test_the_forecast_vs_actual_picture_draws_the_intervals_as_bands():
    from cellcast.pipeline.modeling import plots

    t = np.arange("2024-01-01T00", "2024-01-03T00", dtype="datetime64[h]")
    actual = np.sin(np.arange(len(t)) / 4)
    point = np.stack([actual[i : i + 6] for i in range(0, len(t) - 6)])
    fig = plots.forecast_vs_actual(
        t,
        actual,
        {"gru": point},
        "t",
        "y",
        bands={"gru 80%": (point - 0.2, point + 0.2), "gru 90%": (point - 0.3, point + 0.3)},
    )
    ax = fig.axes[0]
    assert len(ax.collections) == 2 and {"gru 80%", "gru 90%", "gru", "actual"} <= set(
        ax.get_legend_handles_labels()[1]
    )
    plots.close(fig)


def test_the_bars_empirical_intervals_cover_as_its_validation_errors_say():
    """A seasonal naive on a periodic series plus Gaussian noise: its intervals from the validation errors' quantiles
    cover about nominal on test, and their Winkler score is what quantiles.py computes for those bands."""
    rng = np.random.default_rng(5)
    t = np.arange(6000)
    ws = _ws(10 + np.sin(2 * np.pi * t / 24) + rng.standard_normal(len(t)), lookback=48, horizon=6)
    sc = empirical_interval_scores(ws, 24, [0.05, 0.1, 0.5, 0.9, 0.95])
    assert abs(sc["coverage_80"] - 0.8) < 0.03 and abs(sc["coverage_90"] - 0.9) < 0.03, sc
    # the difference of two N(0, 1) draws: the 90% band is 2 x 1.645 x sqrt(2) wide, in units of the MASE scale
    assert sc["width_90"] * mase_scale(ws)[0] == pytest.approx(2 * 1.645 * np.sqrt(2), rel=0.08)
    assert sc["winkler_90"] > sc["width_90"] and sc["winkler_80"] > sc["width_80"]
    assert empirical_interval_scores(ws, 24, []) == {}


def test_window_losses_are_each_windows_mase_read_a_batch_at_a_time():
    ws = _ws(np.sin(np.arange(300) / 5.0) + np.arange(300) / 100, lookback=12, horizon=4)
    st = ws.starts["test"]
    pred = seasonal_naive(ws, st, 1)
    _, y = ws.batch(st)
    by_hand = (np.abs(pred - y) / mase_scale(ws)).mean(axis=(1, 2))
    np.testing.assert_allclose(window_losses(ws, st, pred), by_hand, rtol=1e-12)
    np.testing.assert_array_equal(window_losses(ws, st, pred, batch=7), window_losses(ws, st, pred))


def test_the_bars_intervals_are_read_at_the_candidates_rank_so_the_gate_compares_like_with_like():
    """With evaluate.calibration_rank: paths the candidates' conformal shift reads the rank of the paths a horizon
    apart; the bar's empirical band must be read at that rank too, or the candidate pays a width the bar does not."""
    rng = np.random.default_rng(7)
    t = np.arange(900)
    ws = _ws(10 + np.sin(2 * np.pi * t / 24) + rng.standard_normal(len(t)), lookback=48, horizon=24)
    by_windows = empirical_interval_scores(ws, 24, [0.05, 0.5, 0.95])
    by_paths = empirical_interval_scores(ws, 24, [0.05, 0.5, 0.95], rank="paths")
    assert by_paths["width_90"] > by_windows["width_90"]  # few paths: the rank moves outward, as the candidates'
    assert by_paths["coverage_90"] >= by_windows["coverage_90"]
