"""The Forecaster's shapes across lookback / season / rnn_steps: every combination the config accepts
builds, forecasts, trains and exports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cellcast.pipeline.config import Params
from cellcast.pipeline.data.window import build_windows
from cellcast.pipeline.engine.inference import OnnxForecaster
from cellcast.pipeline.engine.onnx_export import check_parity, export_onnx
from cellcast.pipeline.modeling.evaluate import seasonal_naive
from cellcast.pipeline.modeling.model import Forecaster, ModelSpec
from cellcast.pipeline.modeling.train import Candidate, train_candidate

torch.set_num_threads(1)
HORIZON = 3


def window_set(lookback: int, season: int | None, rnn_steps: int):
    rows = max(240, 12 * (lookback + HORIZON))
    t = np.arange(rows)
    period = season if season and season > 1 else 5
    rng = np.random.default_rng(lookback)
    y = 10 + np.sin(2 * np.pi * t / period) + 0.1 * rng.standard_normal(rows)
    df = pd.DataFrame(
        {"timestamp": pd.date_range("2023-01-01", periods=rows, freq="D"), "y": y, "x": np.cos(2 * np.pi * t / period)}
    )
    settings = Params(
        window={"lookback": lookback, "horizon": HORIZON},
        calendar={"parts": []},  # past inputs only: the lookback, the season and the steps are what is tested
        train={
            "epochs": 1,
            "batch_size": 16,
            "max_train_windows": 16,
            "hidden_size": 8,
            "rnn_steps": rnn_steps,
            "device": "cpu",
            "anchor": "seasonal_naive",  # the season given is the anchor (auto could choose another)
        },
    ).for_dataset("grid")
    return build_windows(df, variables=["y", "x"], targets=["y"], freq="D", settings=settings), settings


@pytest.mark.parametrize(
    "lookback,season,rnn_steps,cell",
    [
        (7, 7, 48, "rnn"),
        (7, 7, 48, "lstm"),
        (7, 7, 48, "gru"),  # lookback == season: a week of days
        (8, 7, 48, "lstm"),  # lookback == season + 1: one step of seasonal differences
        (7, 7, 3, "gru"),  # rnn_steps below the lookback, no room for differences
        (5, 1, 48, "gru"),  # season 1 (naive anchor), rnn_steps > lookback
        (1, 1, 48, "lstm"),  # the shortest lookback there is
        (6, None, 48, "rnn"),  # no anchor, rnn_steps > lookback
        (336, 336, 48, "gru"),  # a week of half-hours read with the weekly anchor
    ],
)
def test_every_lookback_season_and_rnn_steps_forecasts_trains_and_exports(tmp_path, lookback, season, rnn_steps, cell):
    ws, settings = window_set(lookback, season, rnn_steps)
    x, _ = ws.batch(ws.starts["test"])

    # forward: an untrained anchored model is its seasonal-naive forecast, whatever the cell reads
    r = train_candidate(ws, Candidate(cell, 8, 1), settings, anchor_season=season)
    spec = r.model.spec
    assert 1 <= spec.steps <= min(rnn_steps, lookback)
    assert spec.seasonal_diffs == (season is not None and lookback > season)
    untrained = Forecaster(spec).eval()
    with torch.no_grad():
        out = untrained(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    assert out.shape == (len(x), HORIZON, 1)
    if season is not None:
        np.testing.assert_allclose(out, seasonal_naive(ws, ws.starts["test"], season), rtol=1e-5, atol=1e-4)

    # one epoch of training ran and left finite weights
    assert len(r.history) == 1 and np.isfinite(r.history[0]["train_loss"])
    assert all(torch.isfinite(p).all() for p in r.model.parameters())

    # export: the ONNX graph matches torch on real windows, and answers a single request
    path = export_onnx(r.model, tmp_path / f"{cell}.onnx", {})
    parity = check_parity(r.model, path, x)
    assert parity.ok, parity.reason
    y1 = OnnxForecaster.from_path(path, device="cpu").predict(x[:1])
    with torch.no_grad():
        ref = r.model(torch.from_numpy(np.ascontiguousarray(x[:1]))).numpy()
    np.testing.assert_allclose(y1, ref, rtol=0, atol=1e-4)


def test_a_spec_that_cannot_be_built_is_refused_by_name():
    base = dict(cell="gru", n_vars=1, target_idx=[0], lookback=7, horizon=2)
    for bad, needle in [
        ({"anchor_season": 8}, "anchor_season 8"),
        ({"anchor_season": 0}, "anchor_season 0"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"lookback": 0}, "lookback"),
    ]:
        with pytest.raises(ValueError, match=needle):
            ModelSpec(**{**base, **bad})
