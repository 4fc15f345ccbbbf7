"""The training loop on the CPU: learning, reproducibility, resuming, the anchored start."""
import numpy as np
import pandas as pd
import pytest
import torch

from cellcast.pipeline.config import Params
from cellcast.pipeline.modeling.evaluate import evaluate_baselines, evaluate_forecasts, predict_windows, seasonal_naive
from cellcast.pipeline.modeling.train import Candidate, predictor, train_candidate
from cellcast.pipeline.data.window import build_windows

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ws():
    rng = np.random.default_rng(1)
    n = 1500
    t = np.arange(n)
    level = np.cumsum(rng.standard_normal(n)) * 0.05          # a drifting level seasonal naive can't follow
    y = 10 + np.sin(2 * np.pi * t / 24) + level + 0.05 * rng.standard_normal(n)
    df = pd.DataFrame({"timestamp": pd.date_range("2022-01-01", periods=n, freq="h"), "y": y, "x": np.cos(2 * np.pi * t / 24)})
    return build_windows(df, name="syn", variables=["y", "x"], targets=["y"], freq="h", settings=settings())


def settings(**train):
    base = {"epochs": 6, "batch_size": 64, "max_train_windows": 640, "time_budget_s": 120, "hidden_size": 16,
            "rnn_steps": 12, "patience": 3, "lr": 0.01, "device": "cpu"}
    return Params(window={"lookback": 36, "horizon": 6}, train={**base, **train}).for_dataset("syn")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_each_cell_learns_and_beats_its_anchor(ws, cell):
    r = train_candidate(ws, Candidate(cell, 16, 1), settings(), anchor_season=24)
    assert r.best_val_loss < r.initial_val_loss, "training did not improve on the seasonal-naive start"
    pred = predict_windows(predictor(r.model), ws, "test")
    m, by_step = evaluate_forecasts(ws, "test", pred)
    base = evaluate_baselines(ws, "test", [24]).scores["seasonal_naive_24"]["mase"]
    assert m["mase"] < base
    assert len(by_step) == ws.meta.horizon and len(r.history) >= 1
    assert {"epoch", "train_loss", "val_loss", "lr"} <= set(r.history[0])


def test_untrained_anchored_model_is_the_seasonal_naive_forecast(ws):
    r = train_candidate(ws, Candidate("gru", 8, 1), settings(epochs=1, max_train_windows=1, lr=1e-12), anchor_season=24)
    pred = predict_windows(predictor(r.model), ws, "val")
    np.testing.assert_allclose(pred, seasonal_naive(ws, ws.starts["val"], 24), rtol=1e-5, atol=1e-4)


def test_same_params_and_data_give_the_same_metrics_on_cpu(ws):
    a = train_candidate(ws, Candidate("lstm", 16, 1), settings(epochs=2), anchor_season=24)
    b = train_candidate(ws, Candidate("lstm", 16, 1), settings(epochs=2), anchor_season=24)
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]


def test_an_interrupted_run_resumes_from_its_checkpoint(ws, tmp_path):
    full = train_candidate(ws, Candidate("gru", 16, 1), settings(epochs=4, patience=10), 24, checkpoint_dir=tmp_path / "a")
    # interrupt after epoch 2 (time budget), then run again with the full budget: it resumes at epoch 3
    calls = []

    def stop_after_two(row):
        calls.append(row["epoch"])
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_candidate(ws, Candidate("gru", 16, 1), settings(epochs=4, patience=10), 24,
                        checkpoint_dir=tmp_path / "b", on_epoch=stop_after_two)
    resumed = train_candidate(ws, Candidate("gru", 16, 1), settings(epochs=4, patience=10), 24, checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_from == 3
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    np.testing.assert_allclose([h["val_loss"] for h in resumed.history], [h["val_loss"] for h in full.history], rtol=1e-5)


def test_early_stopping_restores_the_best_weights(ws):
    r = train_candidate(ws, Candidate("rnn", 16, 1), settings(epochs=30, lr=0.5, patience=2), anchor_season=24)
    assert r.stopped.startswith("early stop") or r.stopped == "max epochs"
    pred = predict_windows(predictor(r.model), ws, "val")
    m, _ = evaluate_forecasts(ws, "val", pred)
    assert min(h["val_loss"] for h in r.history + [{"val_loss": r.initial_val_loss}]) == pytest.approx(r.best_val_loss)


def test_the_loss_ignores_filled_targets():
    # a constant series the naive-anchored model forecasts exactly, but for filled cells set to 100:
    # with them masked, every loss is 0 (nothing to learn); scored as observations, they would not be
    n = 600
    df = pd.DataFrame({"timestamp": pd.date_range("2022-01-01", periods=n, freq="h"), "y": np.full(n, 5.0),
                       "x": np.cos(np.arange(n) / 3)})
    df["filled:y"], df["filled:x"] = False, False
    for a in (100, 200, 300, 450, 520):                       # in train, val and test targets
        df.loc[a:a + 2, "y"], df.loc[a:a + 2, "filled:y"] = 100.0, True
    ws = build_windows(df, name="c", variables=["y", "x"], targets=["y"], freq="h", settings=settings(epochs=2))
    res = train_candidate(ws, Candidate("gru", 8, 1), settings(epochs=2), anchor_season=1)
    assert res.initial_val_loss == 0.0 and all(h["train_loss"] == 0.0 and h["val_loss"] == 0.0 for h in res.history)
