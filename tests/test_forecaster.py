"""The forecaster's new parts: the linear anchor (closed form, chosen on validation), known-future inputs, the
decoder, quantile heads that cannot cross, their conformal calibration, and the ensemble."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import numpy as np
import pandas as pd
import pytest
import torch

from cellcast.pipeline.config import Params
from cellcast.pipeline.data.window import build_windows
from cellcast.pipeline.errors import ConfigError
from cellcast.pipeline.modeling.anchor import choose_anchor, fit_linear_anchor, linear_forecast, theta_weights
from cellcast.pipeline.modeling.evaluate import mase_scale, metrics, seasonal_naive
from cellcast.pipeline.modeling.model import Ensemble, Forecaster, ModelSpec, monotone
from cellcast.pipeline.modeling.quantiles import conformal_shift, quantile_scores
from cellcast.pipeline.modeling.train import (
    Candidate,
    TrainResult,
    anchor_alone,
    build_ensemble,
    model_spec,
    predictor,
    quantile_predictor,
    train_candidate,
    use_decoder,
)

torch.set_num_threads(1)
LEVELS = [0.05, 0.1, 0.5, 0.9, 0.95]
TRAIN = {
    "epochs": 2,
    "batch_size": 64,
    "max_train_windows": 512,
    "hidden_size": 8,
    "rnn_steps": 12,
    "lr": 0.01,
    "patience": 2,
    "device": "cpu",
}


def promo_series(n=3000, noise=0.3, seed=0):
    """Hourly sales: a daily cycle, a planned promotion that lifts them (known ahead), Gaussian noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    promo = (rng.random(n) < 0.1).astype(float)
    y = 10 + np.sin(2 * np.pi * t / 24) + 2 * promo + noise * rng.standard_normal(n)
    return pd.DataFrame({"timestamp": pd.date_range("2022-01-01", periods=n, freq="h"), "y": y, "promo": promo})


def settings(lookback=48, horizon=6, calendar=None, evaluate=None, **train):
    return Params(
        window={"lookback": lookback, "horizon": horizon},
        calendar=calendar or {"parts": ["tod", "dow"]},
        train={**TRAIN, **train},
        evaluate=evaluate or {},
    ).for_dataset("syn")


def windows(s, df=None, future=True):
    df = promo_series() if df is None else df
    return build_windows(
        df,
        variables=["y", "promo"],
        targets=["y"],
        freq="h",
        settings=s,
        future_features=["promo"] if future else [],
    )


def anchored_model(ws, s, choice, cell: str = "gru") -> Forecaster:
    """An untrained candidate of `cell` on the linear anchor `choice` holds (its residual head at zero): that anchor."""
    spec = model_spec(ws, Candidate(cell, 8, 1), s, choice)
    assert spec.anchor == "linear" and spec.anchor_season == 24
    model = Forecaster(spec, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(choice.linear.weight))
        model.linear.bias.copy_(torch.from_numpy(choice.linear.bias))
    return model


def test_the_linear_anchor_is_fitted_in_closed_form_and_an_untrained_model_is_that_anchor():
    s = settings(anchor="linear")
    ws = windows(s)
    lin = fit_linear_anchor(ws, s)
    assert set(lin.by_ridge) == {"0.1", "1", "10", "100", "1000"} and lin.by_ridge[f"{lin.ridge:g}"] == min(
        lin.by_ridge.values()
    )
    assert lin.weight.shape == (6, 48 + 6 * 5)  # lookback of the target + the horizon's future block
    # the promotion is known ahead: its weight at each step of the horizon recovers its lift (2 / std of y)
    promo_w = lin.weight[np.arange(6), 48 + np.arange(6) * 5 + 4] * ws.future_scaler()[1][4] ** -1
    np.testing.assert_allclose(promo_w * ws.meta.std[0], 2.0, rtol=0.1)
    again = fit_linear_anchor(ws, s)
    assert np.array_equal(again.weight, lin.weight)  # closed form: no seed, the same every time

    choice = choose_anchor(ws, s, 24)
    spec = model_spec(ws, Candidate("gru", 8, 1), s, choice)
    assert spec.anchor == "linear" and spec.anchor_season == 24 and spec.n_future == 5
    model = Forecaster(spec, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(lin.weight))
        model.linear.bias.copy_(torch.from_numpy(lin.bias))
    test = ws.starts["test"]
    np.testing.assert_allclose(predictor(model)(*ws.inputs(test)), linear_forecast(ws, test, lin), rtol=0, atol=1e-4)
    _, y = ws.batch(test)
    assert (
        metrics(y, linear_forecast(ws, test, lin), mase_scale(ws))["mase"]
        < 0.6 * metrics(y, seasonal_naive(ws, test, 24), mase_scale(ws))["mase"]
    )


def test_the_combined_anchor_is_the_mean_of_the_linear_anchor_and_the_seasonal_naive_in_one_linear_map():
    s = settings(anchor="combined")
    ws = windows(s)
    choice = choose_anchor(ws, s, 24)
    assert choice.kind == "combined" and choice.linear is not None and choice.season == 24
    lin = fit_linear_anchor(ws, s)
    test = ws.starts["test"]
    mean = (linear_forecast(ws, test, lin) + seasonal_naive(ws, test, 24)) / 2
    np.testing.assert_allclose(linear_forecast(ws, test, choice.linear), mean, rtol=0, atol=1e-4)
    # the model holds it as a linear anchor: an untrained candidate forecasts that mean, through the same graph
    model = anchored_model(ws, s, choice)
    np.testing.assert_allclose(predictor(model)(*ws.inputs(test)), mean, rtol=0, atol=1e-3)
    # auto weighs all three on validation and keeps the lowest; with no seasonal naive there is nothing to combine
    auto = settings(anchor="auto")
    picked = choose_anchor(ws, auto, 24)
    assert set(picked.val_mase) == {"linear", "seasonal_naive", "combined", "theta", "combined_theta"}
    assert picked.kind == min(picked.val_mase, key=picked.val_mase.__getitem__)
    assert "combined" not in choose_anchor(ws, auto, None).val_mase
    assert "combined" not in choose_anchor(ws, auto, 1).val_mase  # the naive forecast is the ridge's own prior
    alone = choose_anchor(ws, s, None)
    assert alone.kind == "linear" and "no seasonal naive (season > 1) to combine with" in alone.reason


def theta_by_hand(z: np.ndarray, season: int, alpha: float, horizon: int) -> np.ndarray:
    """The Theta method on one lookback, step by step: the least-squares line out, centred seasonal indices, simple
    exponential smoothing from the first value, half the slope, the indices back (Hyndman & Billah's form)."""
    t = np.arange(len(z))
    slope, icpt = np.polyfit(t, z, 1)
    rest = z - (icpt + slope * t)
    index = np.array([rest[t % season == p].mean() for p in range(season)])
    index -= index.mean()
    adjusted = z - index[t % season]
    level = adjusted[0]
    for v in adjusted:
        level = alpha * v + (1 - alpha) * level
    b = np.polyfit(t, adjusted, 1)[0]
    h = np.arange(1, horizon + 1)
    n = len(z)
    return level + b / 2 * (h - 1 + 1 / alpha - (1 - alpha) ** n / alpha) + index[(n + h - 1) % season]


def test_the_theta_anchor_is_the_theta_method_on_each_lookback_and_an_untrained_model_forecasts_it():
    # a trend and a season the lookback holds twice: the map is the method, window by window
    rng = np.random.default_rng(3)
    z = 5 + 0.05 * np.arange(48) + np.sin(2 * np.pi * np.arange(48) / 24) + 0.2 * rng.standard_normal(48)
    for alpha in (0.1, 0.5, 1.0):
        np.testing.assert_allclose(theta_weights(48, 6, 24, alpha) @ z, theta_by_hand(z, 24, alpha, 6), atol=1e-9)
    s = settings(anchor="theta", anchor_theta_alphas=[0.2, 0.5])
    df = promo_series()
    df["y"] += 0.002 * np.arange(len(df))  # a trend the seasonal naive does not carry
    ws = windows(s, df)
    choice = choose_anchor(ws, s, 24)
    assert choice.kind == "theta" and choice.linear is not None and choice.linear.alpha in (0.2, 0.5)
    assert set(choice.linear.by_alpha) == {"0.2", "0.5"}
    assert choice.linear.by_alpha[f"{choice.linear.alpha:g}"] == min(choice.linear.by_alpha.values())
    test = ws.starts["test"][:40]
    x, _ = ws.batch(test)
    by_hand = np.stack([theta_by_hand(w[:, 0].astype(np.float64), 24, choice.linear.alpha, 6) for w in x])
    np.testing.assert_allclose(linear_forecast(ws, test, choice.linear)[:, :, 0], by_hand, rtol=0, atol=1e-3)
    # held as a linear anchor that reads no known-future input: the model and its graph are a linear anchor's
    assert not choice.linear.weight[:, 48:].any() and not choice.linear.bias.any()
    model = anchored_model(ws, s, choice, "lstm")
    np.testing.assert_allclose(predictor(model)(*ws.inputs(test))[:, :, 0], by_hand, rtol=0, atol=1e-3)
    # auto weighs it (and its mean with the ridge) only where a seasonal naive of more than one step is there
    auto = settings(anchor="auto")
    assert {"theta", "combined_theta"} <= set(choose_anchor(ws, auto, 24).val_mase)
    assert "theta" not in choose_anchor(ws, auto, 1).val_mase and "theta" not in choose_anchor(ws, auto, None).val_mase


def test_a_lookback_lengthened_for_seasons_weighs_the_anchors_of_the_lookback_before_and_keeps_the_better():
    from cellcast.pipeline.data.window import with_lookback

    # 16 years of months with a trend and a season: auto's lookback is 36 months, 19 (a tenth) with one
    rng = np.random.default_rng(1)
    t = np.arange(192)
    y = 20 + 0.05 * t + 3 * np.sin(2 * np.pi * t / 12) + rng.standard_normal(192)
    df = pd.DataFrame({"timestamp": pd.date_range("2000-01-01", periods=192, freq="MS"), "y": y})
    train = {**TRAIN, "rnn_steps": 48}
    one = Params(window={"min_lookback_seasons": 1}, calendar={"parts": []}, train=train).for_dataset("syn")
    s = Params(calendar={"parts": []}, train=train).for_dataset("syn")  # the default: three seasons
    ws = build_windows(df, variables=["y"], targets=["y"], freq="MS", settings=s)
    before = build_windows(df, variables=["y"], targets=["y"], freq="MS", settings=one)
    assert (ws.meta.lookback, before.meta.lookback) == (36, 19)
    short = with_lookback(ws, 19, s)  # the same windows as the window stage cuts for 19 months
    assert all(np.array_equal(short.starts[k], before.starts[k]) for k in ("train", "val", "test"))
    choice, was = choose_anchor(ws, s, 12), choose_anchor(before, one, 12)
    # both sets weighed on the same validation targets; here the ridge on the last 19 months wins
    assert set(choice.val_mase) == set(was.val_mase) | {f"{k} (last 19)" for k in was.val_mase}
    assert choice.kind == was.kind == "linear" and "reading the last 19 of the 36" in choice.reason
    assert choice.val_mase["linear (last 19)"] < min(choice.val_mase[k] for k in was.val_mase)
    assert choice.linear is not None and was.linear is not None and choice.linear.span == 19
    # held over the 36 months with no weight on the first 17: the forecasts of the 19-month choice
    assert not choice.linear.weight[:, :17].any()
    np.testing.assert_allclose(
        linear_forecast(ws, ws.starts["test"], choice.linear),
        linear_forecast(before, before.starts["test"][-len(ws.starts["test"]) :], was.linear),
        atol=1e-4,
    )
    assert not any("last" in k for k in was.val_mase)  # one season: one set weighed


def test_the_anchor_alone_is_a_candidate_that_trains_nothing_and_forecasts_its_anchor():
    s = settings(anchor="linear")
    ws = windows(s)
    choice = choose_anchor(ws, s, 24)
    trained = [cast(TrainResult, SimpleNamespace(candidate=Candidate("gru", 8, 1)))]  # it reads the first candidate
    alone = anchor_alone(trained, ws, s, choice)
    assert alone is not None and alone.candidate.name == "anchor" and alone.candidate.cell == "gru"
    assert alone.history == [] and alone.seconds == 0.0 and "linear anchor alone" in alone.stopped
    test = ws.starts["test"]
    np.testing.assert_allclose(
        predictor(alone.model)(*ws.inputs(test)), linear_forecast(ws, test, choice.linear), rtol=0, atol=1e-4
    )
    assert alone.calibration and np.isfinite(alone.best_val_loss)  # conformalised and scored like the others
    off = settings(anchor="linear", anchor_candidate=False)
    assert anchor_alone(trained, ws, off, choice) is None
    bare = settings(residual=False)
    assert anchor_alone(trained, ws, bare, choose_anchor(ws, bare, 24)) is None  # no anchor: nothing to offer


def test_auto_keeps_the_anchor_that_forecasts_validation_better():
    s = settings(anchor="auto")
    lin = choose_anchor(windows(s), s, 24)
    assert lin.kind == "linear" and lin.val_mase["linear"] < lin.val_mase["seasonal_naive"]
    # a noiseless daily cycle: repeating yesterday is exact, a ridge can only come close
    n = 3000
    df = pd.DataFrame(
        {
            "timestamp": pd.date_range("2022-01-01", periods=n, freq="h"),
            "y": 10 + np.sin(2 * np.pi * np.arange(n) / 24),
            "promo": np.zeros(n),
        }
    )
    snaive = choose_anchor(windows(s, df), s, 24)
    assert snaive.kind == "seasonal_naive" and snaive.linear is None and "seasonal naive (24)" in snaive.reason
    sn = settings(anchor="seasonal_naive")
    assert choose_anchor(windows(sn), sn, 24).kind == "seasonal_naive"
    assert choose_anchor(windows(sn), sn, None).kind == "none"
    assert settings().train.anchor == "auto" and choose_anchor(windows(settings()), settings(), None).kind == "linear"


def test_decoder_auto_runs_where_there_is_a_future_block_to_read_over_a_horizon():
    ws = windows(settings())  # calendar and a promotion known ahead, 6 steps
    assert settings().train.decoder == "auto" and use_decoder("auto", ws.meta)
    assert model_spec(ws, Candidate("gru", 8, 1), settings(), 24).decoder
    bare = windows(settings(calendar={"parts": []}), future=False)
    assert bare.meta.n_future == 0 and not use_decoder("auto", bare.meta)
    one_step = windows(settings(horizon=1))
    assert not use_decoder("auto", one_step.meta)
    assert not use_decoder(False, ws.meta) and use_decoder(True, bare.meta)  # set by hand: as set


def _random(model: torch.nn.Module, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


@pytest.mark.parametrize("cell,decoder", [("gru", False), ("lstm", True), ("rnn", True)])
def test_quantiles_never_cross_whatever_the_weights_and_the_shift(cell, decoder):
    spec = ModelSpec(
        cell=cell,
        n_vars=2,
        target_idx=[0],
        lookback=24,
        horizon=4,
        hidden_size=8,
        num_layers=2,
        anchor_season=12,
        n_future=3,
        decoder=decoder,
        quantiles=LEVELS,
        mean=[5, 0],
        std=[2, 1],
    )
    model = _random(Forecaster(spec)).eval()
    model.q_shift.copy_(torch.randn(model.q_shift.shape) * 3)  # a wild calibration: still ordered
    model.q_scale.copy_(torch.randn(model.q_scale.shape))
    x, f = torch.randn(64, 24, 2) * 3, torch.randn(64, 4, 3)
    with torch.no_grad():
        y, q = model.forward_all(x, f)
    assert q.shape == (64, 4, 1, 5) and (q.diff(dim=-1) >= 0).all()
    assert torch.equal(q[..., 2], y)  # the median is the point forecast
    with torch.no_grad():
        torch.testing.assert_close(model(x, f), y)
    with pytest.raises(ValueError, match="reads 3 known-future inputs"):
        model(x)
    # monotone keeps what is already ordered and the median as it is
    ordered = torch.sort(torch.randn(5, 5), dim=-1).values
    assert torch.equal(monotone(ordered, 2), ordered)


def test_an_untrained_decoder_model_is_its_anchor_and_the_decoder_reads_the_future():
    s = settings(decoder=True, anchor="seasonal_naive")
    ws = windows(s)
    r = train_candidate(ws, Candidate("lstm", 8, 1), s, 24)
    spec = r.model.spec
    assert spec.decoder and spec.anchor == "seasonal_naive" and spec.n_future == 5
    untrained = Forecaster(spec, generator=torch.Generator().manual_seed(3)).eval()
    test = ws.starts["test"]
    np.testing.assert_allclose(predictor(untrained)(*ws.inputs(test)), seasonal_naive(ws, test, 24), atol=1e-4)
    # with weights, the decoder's output moves when only the future block does
    model = _random(Forecaster(spec)).eval()
    x, f = ws.inputs(test[:8])
    a = predictor(model)(x, f)
    f2 = f.copy()
    f2[:, :, -1] = 1 - f2[:, :, -1]
    assert not np.allclose(a, predictor(model)(x, f2))


def test_weights_do_not_depend_on_the_global_rng_or_what_was_built_before():
    s = settings(decoder=True, anchor="linear")
    ws = windows(s)
    a = train_candidate(ws, Candidate("gru", 8, 1), s, 24)
    torch.manual_seed(1234)
    torch.nn.LSTM(4, 4)  # someone else drew from the global generator
    b = train_candidate(ws, Candidate("gru", 8, 1), s, 24)
    assert all(torch.equal(a.model.state_dict()[k], b.model.state_dict()[k]) for k in a.model.state_dict())


def test_conformal_shift_reaches_the_nominal_rank_on_held_out_windows():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((4000, 3, 1))
    q = np.zeros((4000, 3, 1, 5), np.float32)  # every level forecasts 0: uncalibrated
    shift = conformal_shift(y, q, LEVELS)
    assert shift[..., 2].tolist() == [[0.0]] * 3  # the median is never moved
    np.testing.assert_allclose(shift[..., 4], 1.645, atol=0.08)  # the 95% quantile of N(0, 1)
    np.testing.assert_allclose(shift[..., 0], -1.645, atol=0.08)
    fresh = rng.standard_normal((4000, 3, 1))
    inside = (fresh >= shift[..., 0]) & (fresh <= shift[..., 4])
    assert abs(inside.mean() - 0.9) < 0.02
    # widen (the default): a band already too wide on the held-out windows is kept, never narrowed
    wide = np.broadcast_to(np.array([-3, -2, 0, 2, 3], np.float32), q.shape)
    assert (conformal_shift(y, wide, LEVELS)[..., 4] < 0).all()  # two-sided narrows it
    kept = conformal_shift(y, wide, LEVELS, mode="widen")
    assert (kept == 0).all()
    np.testing.assert_array_equal(conformal_shift(y, q, LEVELS, mode="widen"), shift)  # widening is kept as is


def test_the_conformal_rank_counts_independent_paths_not_overlapping_windows():
    rng = np.random.default_rng(3)
    y = rng.standard_normal((26, 6, 1))  # 26 windows 6 steps long at consecutive origins: 5 paths a horizon apart
    q = np.zeros((26, 6, 1, 5), np.float32)
    by_windows = conformal_shift(y, q, LEVELS, mode="widen")
    by_paths = conformal_shift(y, q, LEVELS, mode="widen", paths=5)
    # the 95% rank of 5 paths (6 of 5) lies beyond the sample: the band reaches past the largest miss, where 26
    # windows did not reach it (quantiles._beyond)
    assert (by_paths[..., 4] >= y.max(axis=0).clip(min=0) - 1e-6).all()
    assert (by_paths[..., 0] <= y.min(axis=0).clip(max=0) + 1e-6).all()
    assert (by_paths[..., 4] > by_paths[..., 3]).all()  # and the 95% level further than the 90% one
    assert (by_paths[..., 3] >= by_windows[..., 3]).all() and (by_paths[..., 3] > by_windows[..., 3]).any()
    # windows that do not overlap are each a path: the rank is the windows' own
    np.testing.assert_array_equal(conformal_shift(y, q, LEVELS, mode="widen", paths=26), by_windows)


def test_guarded_calibration_narrows_only_where_every_part_of_the_held_out_span_agrees():
    rng = np.random.default_rng(2)
    y = rng.standard_normal((4000, 3, 1))
    wide = np.broadcast_to(np.array([-3, -2, 0, 2, 3], np.float32), (4000, 3, 1, 5))
    two = conformal_shift(y, wide, LEVELS)
    guarded = conformal_shift(y, wide, LEVELS, mode="guarded", parts=2)
    # too wide on both halves: narrowed as two-sided does (within the halves' own rank noise)
    assert (guarded[..., 4] < -1.0).all() and (guarded[..., 0] > 1.0).all()
    np.testing.assert_allclose(guarded, two, atol=0.1)
    assert guarded[..., 2].tolist() == [[0.0]] * 3
    # a calm second half (errors a third as large) says narrow a lot, the first half a little: the first half wins
    calm = y.copy()
    calm[2000:] /= 3
    g = conformal_shift(calm, wide, LEVELS, mode="guarded", parts=2)
    first_half = conformal_shift(calm[:2000], wide[:2000], LEVELS)
    assert (conformal_shift(calm, wide, LEVELS)[..., 4] < g[..., 4]).all()  # two-sided narrows further
    np.testing.assert_allclose(g[..., 4], first_half[..., 4], atol=1e-6)
    # too narrow: it widens exactly as widen and two-sided do
    q = np.zeros((4000, 3, 1, 5), np.float32)
    np.testing.assert_array_equal(conformal_shift(y, q, LEVELS, mode="guarded"), conformal_shift(y, q, LEVELS))
    # an interval never narrows past its median: the shift of a level stays on its side
    assert (g[..., 4] <= 0).all() and (g[..., 3] <= 0).all() and (g[..., 0] >= 0).all()


def test_coverage_is_computed_correctly_on_a_series_with_known_noise():
    """Nominal 90% gives 90% +- 2 over many windows: with the true quantiles of the noise, the scores say so."""
    rng = np.random.default_rng(1)
    n, H = 5000, 6
    mean = 10 + np.sin(np.arange(n + H) / 5)
    y = np.stack([mean[i : i + H] for i in range(n)])[..., None] + 0.5 * rng.standard_normal((n, H, 1))
    z = np.array([-1.6449, -1.2816, 0.0, 1.2816, 1.6449])
    q = np.stack([mean[i : i + H] for i in range(n)])[..., None, None] + 0.5 * z
    scores, steps = quantile_scores(y, q, LEVELS, np.array([0.5]))
    assert abs(scores["coverage_90"] - 0.90) < 0.02 and abs(scores["coverage_80"] - 0.80) < 0.02
    assert scores["nominal_90"] == 0.9 and len(steps["coverage_90"]) == H
    assert scores["width_90"] == pytest.approx(2 * 1.6449, rel=1e-3)  # in units of the scale (0.5)
    assert scores["crps"] == pytest.approx(2 * scores["pinball"])
    # an interval half as wide covers less, and Winkler punishes it
    narrow = np.stack([mean[i : i + H] for i in range(n)])[..., None, None] + 0.25 * z
    worse, _ = quantile_scores(y, narrow, LEVELS, np.array([0.5]))
    assert worse["coverage_90"] < 0.65 and worse["winkler_90"] > scores["winkler_90"]
    mask = np.ones_like(y, bool)
    mask[:, 0] = False  # filled targets are not scored
    assert np.isnan(quantile_scores(y, q, LEVELS, np.array([0.5]), mask)[1]["coverage_90"][0])


def test_calibration_reads_the_residual_gates_forecast_of_its_windows_instead_of_forecasting_them_again():
    from cellcast.pipeline.modeling.train import calibrate, choose_residual_gate

    s = settings(residual_gates=[0.0, 1.0])
    ws = windows(s)
    model = Forecaster(model_spec(ws, Candidate("gru", 8, 1), s, 24)).eval()
    gate, seen = choose_residual_gate(model, ws, s)
    assert gate["gate"] in (0.0, 1.0) and seen is not None
    starts, q = seen
    assert np.array_equal(starts, ws.starts["val"]) and q.shape[0] == len(starts)
    read = calibrate(model, ws, s, seen)
    shift = torch.stack([model.q_shift, model.q_scale]).clone()  # absolute or in units of the level
    assert shift.any() and calibrate(model, ws, s) == read
    assert torch.equal(torch.stack([model.q_shift, model.q_scale]), shift)
    # other windows than the calibration's (the most recent 300): forecast again
    recent = settings(residual_gates=[0.0, 1.0], evaluate={"calibration_windows": 300})
    assert calibrate(model, ws, recent, seen)["windows"] == 300


def test_a_trained_and_calibrated_model_covers_its_nominal_levels_on_test():
    s = settings(anchor="linear", epochs=1)
    ws = windows(s, promo_series(n=9000, noise=0.5, seed=2))
    r = train_candidate(ws, Candidate("gru", 8, 1), s, 24)
    assert r.calibration["windows"] == len(ws.starts["val"]) and r.calibration["split"] == "val"
    test = ws.starts["test"]
    y_hat, q = quantile_predictor(r.model)(*ws.inputs(test))
    _, y = ws.batch(test)
    scores, _ = quantile_scores(y, q, LEVELS, mase_scale(ws))
    assert abs(scores["coverage_90"] - 0.9) < 0.02 and abs(scores["coverage_80"] - 0.8) < 0.03, scores
    recent = settings(anchor="linear", epochs=1, evaluate={"calibration_windows": 300})
    assert train_candidate(ws, Candidate("gru", 8, 1), recent, 24).calibration["windows"] == 300
    raw = train_candidate(
        ws, Candidate("gru", 8, 1), settings(anchor="linear", epochs=1, evaluate={"calibration": "none"}), 24
    )
    assert raw.calibration["windows"] == 0 and not raw.model.q_shift.any()


def test_the_ensemble_is_the_mean_of_its_members_and_one_more_candidate():
    s = settings(ensemble=True, cells=["gru", "rnn"])
    ws = windows(s)
    results = [train_candidate(ws, Candidate(c, 8, 1), s, 24) for c in ("gru", "rnn")]
    ens = build_ensemble(results, ws, s)
    assert ens.candidate.name == "ensemble" and isinstance(ens.model, Ensemble)
    assert ens.model.spec.to_dict()["cell"] == "ensemble" and [m["cell"] for m in ens.model.spec.members] == [
        "gru",
        "rnn",
    ]
    x, f = ws.inputs(ws.starts["test"][:50])
    members = np.mean([predictor(r.model)(x, f) for r in results], axis=0)
    np.testing.assert_allclose(predictor(ens.model)(x, f), members, atol=1e-5)
    _, q = quantile_predictor(ens.model)(x, f)
    assert (np.diff(q, axis=-1) >= 0).all() and ens.calibration["windows"] == len(ws.starts["val"])
    assert build_ensemble(results[:1], ws, s) is None and build_ensemble(results, ws, settings(ensemble=False)) is None
    assert settings().train.ensemble  # on by default: chosen on validation like any candidate


def test_the_linear_anchor_stays_in_fp32_under_bf16_autocast():
    """On a GPU training runs under bf16 autocast; the anchor (fitted in float64, the forecast's bulk) must not be
    rounded to bf16 there. CPU autocast takes the same path."""
    s = settings(anchor="linear")
    ws = windows(s)
    choice = choose_anchor(ws, s, 24)
    model = Forecaster(model_spec(ws, Candidate("gru", 8, 1), s, choice)).eval()
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(choice.linear.weight))
        model.linear.bias.copy_(torch.from_numpy(choice.linear.bias))
        x, f = (torch.from_numpy(a) for a in ws.inputs(ws.starts["test"][:64]))
        exact = model(x, f)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x, f).float()
    torch.testing.assert_close(mixed, exact, rtol=1e-5, atol=1e-4)


def odd_days_series(n=2400, seed=0):
    """Hourly: a daily cycle with small noise, and one day in five shifted by an event: its copy misleads tomorrow."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    odd = rng.random(n // 24 + 1) < 0.2
    y = 10 + np.sin(2 * np.pi * t / 24) + 0.05 * rng.standard_normal(n) + 3 * odd[t // 24]
    return pd.DataFrame({"timestamp": pd.date_range("2022-01-01", periods=n, freq="h"), "y": y, "promo": np.zeros(n)})


def test_the_seasonal_median_outvotes_one_odd_day_and_an_untrained_model_is_that_median():
    from cellcast.pipeline.modeling.anchor import median_sets
    from cellcast.pipeline.modeling.anchor import seasonal_median as median_forecast

    s = settings(lookback=80, anchor="seasonal_median")
    ws = windows(s, odd_days_series())
    assert median_sets(ws) == [[24, 48], [24, 48, 72]]  # the lookback holds a day three times
    choice = choose_anchor(ws, s, 24)
    assert choice.kind == "seasonal_median" and choice.seasons == [24, 48, 72] and choice.season == 24
    assert set(choice.val_mase) == {"24,48", "24,48,72"}
    spec = model_spec(ws, Candidate("gru", 8, 1), s, choice)
    assert spec.anchor == "seasonal_median" and spec.anchor_seasons == [24, 48, 72]
    test = ws.starts["test"]
    np.testing.assert_allclose(
        predictor(Forecaster(spec).eval())(*ws.inputs(test)), median_forecast(ws, test, choice.seasons), atol=1e-4
    )
    _, y = ws.batch(test)
    scale = mase_scale(ws)
    median = metrics(y, median_forecast(ws, test, choice.seasons), scale)["mase"]
    assert median < 0.6 * metrics(y, seasonal_naive(ws, test, 24), scale)["mase"]
    # auto weighs it on a panel only; a lookback that holds no season twice cannot take it
    assert choose_anchor(ws, settings(lookback=80), 24).kind != "seasonal_median"
    with pytest.raises(ConfigError, match="holds a natural season .* twice"):
        choose_anchor(
            windows(settings(lookback=40), odd_days_series()), settings(lookback=40, anchor="seasonal_median"), 24
        )


def test_the_residual_gate_shrinks_a_residual_that_forecasts_validation_worse_toward_its_anchor():
    from cellcast.pipeline.modeling.train import choose_residual_gate

    s = settings()
    ws = windows(s)
    model = Forecaster(model_spec(ws, Candidate("gru", 8, 1), s, 24)).eval()
    anchor = predictor(model)(*ws.inputs(ws.starts["test"]))
    with torch.no_grad():  # a residual of pure noise: every share of it forecasts validation worse than none
        model.head.bias.copy_(torch.from_numpy(np.random.default_rng(0).normal(0, 1, model.head.bias.shape)))
    choice, _ = choose_residual_gate(model, ws, s)
    assert choice["gate"] == 0.0 and model.spec.residual_gate == 0.0
    assert list(choice["val_mase"]) == ["0", "0.25", "0.5", "0.75", "1"]
    assert choice["val_mase"]["0"] < choice["val_mase"]["0.25"] < choice["val_mase"]["1"]
    np.testing.assert_allclose(predictor(model)(*ws.inputs(ws.starts["test"])), anchor, atol=1e-5)
    # a residual that is none: every share ties, and the residual is kept as trained
    zero = Forecaster(model_spec(ws, Candidate("gru", 8, 1), s, 24)).eval()
    assert choose_residual_gate(zero, ws, s)[0]["gate"] == 1.0
    assert choose_residual_gate(model, ws, settings(residual_gates=[1.0])) == ({}, None)
