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
    walk_forward_quantiles,
    window_losses,
)
from cellcast.pipeline.modeling.quantiles import adapted_levels, rank_shift, walk_forward


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


@pytest.mark.parametrize("quantiles", [False, True])
def test_the_forecasts_written_a_batch_at_a_time_are_the_windows_forecast_in_one_batch(quantiles):
    """forecast_windows writes each batch into one array of every window's forecasts: the same values, order and
    dtype as one batch of every window; quantiles only from a predictor that forecasts them."""
    from cellcast.pipeline.modeling.evaluate import forecast_windows

    ws = _ws(np.sin(np.arange(300) / 5.0) + np.arange(300) / 100, lookback=12, horizon=4)
    st = np.concatenate([ws.starts["val"], ws.starts["test"]])

    def predict_all(x, f):  # a forecast that depends on each window's own lookback
        point = (x[:, -4:, :] * np.arange(1, 5, dtype=np.float32)[None, :, None]).astype(np.float32)
        return point, (point[..., None] + np.array([-1.0, 0.0, 1.0], np.float32) if quantiles else None)

    one, q_one = forecast_windows(predict_all, ws, st, batch=len(st))
    by7, q7 = forecast_windows(predict_all, ws, st, batch=7)
    assert len(st) % 7 and one.dtype == by7.dtype == np.float32 and one.shape == (len(st), 4, 1)
    np.testing.assert_array_equal(by7, one)
    if quantiles:
        assert q7 is not None and q_one is not None and q7.shape == (len(st), 4, 1, 3)
        np.testing.assert_array_equal(q7, q_one)
    else:
        assert q7 is None and q_one is None
    empty, q_empty = forecast_windows(predict_all, ws, st[:0])
    assert empty.shape == (0, 4, 1) and q_empty is None


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


def test_a_walk_forward_band_uses_no_miss_from_after_its_origin():
    """Each test window's shift is calibrated only on windows whose last target lies before its origin; the held-out
    windows are always among them, and the later windows see the earlier test windows' misses too."""
    fit_ends = np.arange(10, 30)  # held-out windows, then 40 test windows of horizon 5 at consecutive origins
    origins = np.arange(40, 80)
    ends = np.concatenate([fit_ends, origins + 4])
    seen: list[np.ndarray] = []

    def shift_of(idx):
        seen.append(idx)
        return np.full((1, 1, 1), ends[idx].max() if len(idx) else -1.0)

    per, final = walk_forward(ends, origins, shift_of)
    latest = per[:, 0, 0, 0]
    assert (latest < origins).all()  # no window used a miss it could not have observed
    assert latest[0] == fit_ends.max() and latest[-1] == origins[-1] - 1  # every miss observed by then
    assert final[0, 0, 0] == ends.max()  # the served shift sees every miss
    assert all(np.isin(np.arange(len(fit_ends)), s).all() for s in seen[1:])
    # capped: at most `updates` recalibrations, each still before the windows that use it
    per, _ = walk_forward(ends, origins, shift_of, updates=4)
    assert len(np.unique(per)) <= 4 and (per[:, 0, 0, 0] < origins).all()


def test_an_adapted_walk_forward_learns_only_from_windows_observed_before_its_origin():
    """The levels each origin's ranks are read at come from the coverage of test windows whose whole horizon ended
    before it, scored with the bands the nominal rule gave them; the served shift sees every window."""
    fit_ends = np.arange(10, 30)
    origins = np.arange(40, 80)  # test windows of horizon 5 at consecutive origins
    ends = np.concatenate([fit_ends, origins + 4])
    calls: list[tuple[np.ndarray, np.ndarray]] = []

    def shift_of(idx, at=None):  # nominal: 0; adapted: the latest end of the test windows the levels learnt from
        return np.zeros((1, 1, 1)) if at is None else np.full((1, 1, 1), at[0])

    def adapt(seen, shifts):
        calls.append((seen, shifts))
        return np.array([ends[len(fit_ends) + seen].max()])

    per, final = walk_forward(ends, origins, shift_of, adapt=adapt)
    used = per[:, 0, 0, 0]
    assert (used[used != 0] < origins[used != 0]).all()  # no correction from a window not yet observed
    assert (used[:5] == 0).all() and used[-1] == origins[-1] - 1  # the first origins: nothing observed, nominal
    assert all((s == 0).all() for _, s in calls)  # it learns from the nominal bands, not from its own corrections
    assert final[0, 0, 0] == ends.max()


def test_adapted_levels_move_a_band_toward_what_it_covered_and_no_further_than_the_guard():
    rng = np.random.default_rng(0)
    levels = [0.05, 0.1, 0.5, 0.9, 0.95]
    y = rng.standard_normal((200, 4, 1))
    z = np.array([-1.645, -1.2816, 0.0, 1.2816, 1.645])
    wide = np.broadcast_to(1.6 * z, (200, 4, 1, 5))  # covers about 96% / 99% where it says 80% / 90%
    at = adapted_levels(y, wide, levels, None, weight=1.0)
    assert at[2] == 0.5 and (at[3:] < [0.9, 0.95]).all() and (at[:2] > [0.05, 0.1]).all()  # read nearer the median
    assert at[3] >= 0.7 and at[0] <= 0.275  # at most halfway to the median
    narrow = np.broadcast_to(0.5 * z, (200, 4, 1, 5))
    out = adapted_levels(y, narrow, levels, None, weight=1.0)
    assert (out[3:] > [0.9, 0.95]).all() and (out[3:] <= [0.95, 0.975]).all()  # further out, at most halfway to 1
    np.testing.assert_allclose(adapted_levels(y, wide, levels, None, weight=0.0), levels)  # no evidence: nominal
    half = adapted_levels(y, wide, levels, None, weight=0.5)
    assert (np.abs(np.asarray(half) - levels) <= np.abs(at - levels) + 1e-12).all()


def test_an_adapted_walk_forward_band_that_over_covers_comes_nearer_nominal():
    """A seasonal naive's band read at the paths' rank with few paths over-covers; adapted to how it covered the test
    windows already observed, it covers nearer nominal and scores better."""
    rng = np.random.default_rng(0)
    t = np.arange(1500)
    ws = _ws(10 + np.sin(2 * np.pi * t / 24) + rng.standard_normal(len(t)), lookback=48, horizon=24)
    levels = [0.05, 0.1, 0.5, 0.9, 0.95]
    plain = empirical_interval_scores(ws, 24, levels, rank="paths", walk=True)
    adapted = empirical_interval_scores(ws, 24, levels, rank="paths", walk=True, adapt=True)
    assert plain["coverage_90"] > 0.95 and plain["coverage_80"] > 0.88, plain
    for p, nominal in (("80", 0.8), ("90", 0.9)):
        assert nominal <= adapted[f"coverage_{p}"] < plain[f"coverage_{p}"] - 0.01, (adapted, plain)
        assert adapted[f"winkler_{p}"] < plain[f"winkler_{p}"]


def test_walk_forward_intervals_cover_better_than_static_ones_when_the_noise_grows():
    """A periodic series whose noise grows through the test split: the bar's empirical band read on validation alone
    under-covers; recalibrated on every miss observed before each origin it comes closer to nominal."""
    rng = np.random.default_rng(3)
    t = np.arange(3000)
    noise = rng.standard_normal(len(t)) * (1 + 4 * (t / len(t)) ** 2)
    ws = _ws(10 + np.sin(2 * np.pi * t / 24) + noise, lookback=48, horizon=6)
    levels = [0.05, 0.1, 0.5, 0.9, 0.95]
    static = empirical_interval_scores(ws, 24, levels, rank="paths")
    walked = empirical_interval_scores(ws, 24, levels, rank="paths", walk=True)
    assert static["coverage_80"] < 0.75 and static["coverage_90"] < 0.85, static
    for p in ("80", "90"):
        assert walked[f"coverage_{p}"] > static[f"coverage_{p}"] + 0.03, (walked, static)
        assert walked[f"winkler_{p}"] < static[f"winkler_{p}"]


def test_walk_forward_quantiles_start_from_the_held_out_calibration_and_stay_ordered():
    """On the held-out windows' misses alone a two-sided shift of calibrated quantiles is zero: the first test windows
    keep the held-out calibration; the levels stay in order after any shift."""
    rng = np.random.default_rng(1)
    ws = _ws(rng.standard_normal(800).cumsum(), lookback=12, horizon=4)
    levels = [0.1, 0.5, 0.9]
    fit, test = ws.starts["val"], ws.starts["test"]
    point_f, point_t = seasonal_naive(ws, fit, 1), seasonal_naive(ws, test, 1)

    def spread(p):
        return np.repeat(p[..., None], 3, axis=-1).astype(np.float64)

    off = rank_shift(ws.targets(fit), spread(point_f), levels, None, None)

    def shift(y, q, m, p):
        return rank_shift(y, q, levels, m, p)

    q, final = walk_forward_quantiles(
        ws, fit, spread(point_f) + off, test, spread(point_t) + off, levels, shift, rank="windows"
    )
    np.testing.assert_allclose(q[0], spread(point_t)[0] + off, atol=1e-9)
    assert (np.diff(q, axis=-1) >= 0).all()
    assert np.abs(final).max() > 0  # the test misses move the served shift


def test_misses_are_calibrated_relative_to_the_level_only_where_they_grow_with_it():
    """Windows of a level growing 3% a window: misses proportional to the level are better calibrated in its units
    (relative_wins on the held-out windows' halves), constant misses in the data's; never on a series below zero."""
    from cellcast.pipeline.modeling.quantiles import conformal_shift, forecast_level, relative_wins

    rng = np.random.default_rng(2)
    levels = [0.05, 0.1, 0.5, 0.9, 0.95]
    n, H = 120, 6
    level = 100 * 1.03 ** np.arange(n)[:, None, None]  # (n, 1, 1)
    point = np.broadcast_to(level, (n, H, 1)).astype(np.float64)
    q = np.repeat(point[..., None], len(levels), axis=-1)  # a band of width zero: calibration makes it

    def shift(y, qq, m, part):
        return conformal_shift(y, qq, levels, m, "two_sided")

    grows = point * (1 + 0.1 * rng.standard_normal((n, H, 1)))
    flat = point + 10 * rng.standard_normal((n, H, 1))
    assert relative_wins(grows, q, point, levels, None, shift)
    assert not relative_wins(flat, q, point, levels, None, shift)
    assert not relative_wins(grows - 500, q - 500, point - 500, levels, None, shift)
    assert forecast_level(point).shape == (n, 1, 1, 1)


def test_the_bars_misses_choose_level_units_where_they_grow_with_the_level_and_data_units_where_they_do_not():
    """A monthly series growing 2% a month (about 17x over 12 years) under a seasonal-naive forecast: noise
    proportional to the level reads in level units, additive noise of the same size at the start in the data's (the
    drift the naive lags by grows with the level in both: it is no spread); below zero, never the level's."""
    from cellcast.pipeline.modeling.quantiles import misses_grow_with_level

    rng = np.random.default_rng(5)
    rows, m, H = 150, 12, 6
    level = 100 * 1.02 ** np.arange(rows) + 20 * np.sin(2 * np.pi * np.arange(rows) / m)
    starts = np.arange(m, rows - H + 1)
    rows_of = starts[:, None] + np.arange(H)

    def decide(series: np.ndarray) -> dict:
        return misses_grow_with_level(series[rows_of][..., None], series[rows_of - m][..., None], starts, m)

    proportional = decide(level * (1 + 0.05 * rng.standard_normal(rows)))
    additive = decide(level + 5 * rng.standard_normal(rows))
    assert proportional["level"] and proportional["rho_absolute"] > proportional["threshold"], proportional
    assert not additive["level"] and additive["rho_level"] < -additive["threshold"], additive
    assert not decide(level * (1 + 0.05 * rng.standard_normal(rows)) - 1000)["level"]


def test_a_rank_beyond_the_paths_reads_past_the_largest_miss_and_farther_for_the_wider_interval():
    """25 windows holding 5 paths: the 0.9 and 0.95 levels' ranks (6 of 5) lie beyond the sample; they read past the
    largest miss by their excess in paths (0.4, 0.7) times one path's spacing there, so the 90% band is wider than the
    80% one, not the same. With 30 paths both ranks lie inside the sample: the misses as they are."""
    levels = [0.05, 0.1, 0.5, 0.9, 0.95]
    e = np.arange(25, dtype=np.float64)  # misses 0 .. 24, one window per step of 1
    y = e[:, None, None]
    q = np.zeros((25, 1, 1, 5))
    s = rank_shift(y, q, levels, None, paths=5)[0, 0]
    gap = 24 - 19  # the largest miss less the one a path (5 windows) in
    assert s[3] == pytest.approx(24 + 0.4 * gap) and s[4] == pytest.approx(24 + 0.7 * gap)
    assert s[1] == pytest.approx(0 - 0.4 * 5) and s[0] == pytest.approx(0 - 0.7 * 5)
    inside = rank_shift(np.arange(300.0)[:, None, None], np.zeros((300, 1, 1, 5)), levels, None, paths=30)[0, 0]
    assert inside[4] <= 299 and inside[0] >= 0


@pytest.mark.parametrize("paths", [None, 4.0, 60.0])
def test_the_conformal_shift_taken_a_level_at_a_time_is_the_one_of_every_level_sorted_at_once(paths):
    """rank_shift sorts one level's misses at a time (a fifth of the memory at five levels): the same shift, to the
    bit, as sorting every level's misses together, with filled targets left out and with or without paths; and in
    units of each window's divisor (`per`) the shift of the misses divided beforehand."""
    from cellcast.pipeline.modeling.quantiles import _beyond

    rng = np.random.default_rng(7)
    levels = [0.05, 0.1, 0.5, 0.9, 0.95]
    y = rng.normal(size=(300, 6, 2)).astype(np.float32)
    q = (rng.normal(size=(300, 6, 2, 5)) + np.array([-2, -1, 0, 1, 2])).astype(np.float32)
    mask = rng.random((300, 6, 2)) > 0.1
    mask[:, 0, 1] = False  # a step and target never observed: no shift there
    e = np.where(mask[..., None], y.astype(np.float64)[..., None] - q.astype(np.float64), np.nan)
    srt, n_obs = np.sort(e, axis=0), np.isfinite(e).sum(axis=0)
    want = np.zeros(q.shape[1:])
    for k, tau in enumerate(levels):
        if tau == 0.5:
            continue
        n = n_obs[..., k]
        rank = np.ceil((n + 1) * tau) if tau > 0.5 else np.floor((n + 1) * tau)
        if paths is not None and paths < len(y):
            r = np.ceil((paths + 1) * tau) if tau > 0.5 else np.floor((paths + 1) * tau)
            rank = np.ceil((r - 0.5) / paths * n) if tau > 0.5 else np.floor((r - 0.5) / paths * n)
        idx = np.clip(rank, 1, np.maximum(n, 1)).astype(np.int64) - 1
        pick = np.take_along_axis(srt[..., k], idx[None], axis=0)[0]
        if paths is not None and paths < len(y):
            pick = pick + _beyond(srt[..., k], n, paths, tau)
        want[..., k] = np.where(n > 0, pick, 0.0)
    got = rank_shift(y, q, levels, mask, paths)
    np.testing.assert_array_equal(got, want)
    assert (got[0, 1] == 0).all() and (got[1:, :, [0, 1, 3, 4]] != 0).all()
    # in units of each window's level (calibration_scale): the shift of the divided misses, without dividing q whole
    from cellcast.pipeline.modeling.quantiles import conformal_shift

    per = rng.uniform(0.5, 3.0, (300, 1, 2))
    np.testing.assert_array_equal(
        rank_shift(y, q, levels, mask, paths, per=per), rank_shift(y / per, q / per[..., None], levels, mask, paths)
    )
    for mode in ("widen", "guarded"):
        np.testing.assert_array_equal(
            conformal_shift(y, q, levels, mask, mode, 3, paths, per=per),
            conformal_shift(y / per, q / per[..., None], levels, mask, mode, 3, paths),
        )


def test_a_widened_band_comes_back_toward_the_heads_when_later_misses_are_smaller_never_past_them():
    """further_shift under widen: quantiles carrying a held-out widening of 2 around heads of +-1, on misses of
    standard deviation 0.1, narrow back to the heads exactly (the total shift 0, never inward); on misses of
    standard deviation 3 they widen beyond the held-out band; two-sided keeps its own rule."""
    from cellcast.pipeline.modeling.quantiles import conformal_shift, further_shift

    rng = np.random.default_rng(3)
    levels = [0.1, 0.5, 0.9]
    n, H = 400, 4
    heads = np.broadcast_to(np.array([-1.0, 0.0, 1.0]), (n, H, 1, 3))
    held = np.broadcast_to(np.array([-2.0, 0.0, 2.0]), (H, 1, 3)).astype(np.float64)
    q = heads + held
    calm = further_shift(held, rng.normal(0, 0.1, (n, H, 1)), q, levels)
    total = held + calm
    np.testing.assert_allclose(total[..., 0], 0.0, atol=1e-6)  # back to the heads, not inside them
    np.testing.assert_allclose(total[..., 2], 0.0, atol=1e-6)
    assert (calm[..., 0] > 0).all() and (calm[..., 2] < 0).all()  # it narrowed the held-out band
    wild = further_shift(held, rng.normal(0, 3.0, (n, H, 1)), q, levels)
    assert (wild[..., 0] < 0).all() and (wild[..., 2] > 0).all()  # wider than the held-out band
    y = rng.normal(0, 0.1, (n, H, 1))
    np.testing.assert_array_equal(
        further_shift(held, y, q, levels, mode="two_sided"), conformal_shift(y, q, levels, None, "two_sided")
    )
