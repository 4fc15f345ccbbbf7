"""The seasonal-repeat arithmetic (data/seasonal.py) that the window stage, the baselines and the anchors share."""

import numpy as np
import pandas as pd

from cellcast.pipeline.config import Params
from cellcast.pipeline.data.seasonal import naive_offsets, seasonal_median
from cellcast.pipeline.data.window import build_windows
from cellcast.pipeline.modeling.anchor import seasonal_median as anchor_median
from cellcast.pipeline.modeling.evaluate import seasonal_naive


def test_each_step_repeats_the_latest_row_whole_seasons_back_before_the_horizon():
    assert naive_offsets(5, 1).tolist() == [-1, -1, -1, -1, -1]  # the naive forecast: the last row, always
    assert naive_offsets(5, 2).tolist() == [-2, -1, -2, -1, -2]
    assert naive_offsets(7, 3).tolist() == [-3, -2, -1, -3, -2, -1, -3]  # the last season, over and over
    for season in (1, 2, 3, 7):
        h, off = np.arange(12), naive_offsets(12, season)
        # whole seasons back from its step, before the horizon, and one season less would not be
        assert ((h - off) % season == 0).all() and (off < 0).all() and (off + season >= 0).all()


def test_a_windows_lookback_and_the_series_give_the_same_seasonal_naive_and_median():
    """seasons_pay reads the naive from each window's lookback, evaluate from the series: the same values."""
    rng = np.random.default_rng(0)
    y = np.sin(np.arange(400) * 2 * np.pi / 12) + rng.normal(0, 0.1, 400)
    df = pd.DataFrame({"timestamp": pd.date_range("2021-01-01", periods=400, freq="h"), "y": y})
    s = Params(window={"lookback": 36, "horizon": 8}, ingest={"min_test_horizons": 1}).for_dataset("t")
    ws = build_windows(df, variables=["y"], targets=["y"], freq="h", settings=s)
    L, H, val = ws.meta.lookback, ws.meta.horizon, ws.starts["val"]
    x, _ = ws.batch(val)
    naive = {k: x[:, L + naive_offsets(H, k), :] for k in (1, 6, 12, 24)}
    for k, p in naive.items():
        assert np.array_equal(p, seasonal_naive(ws, val, k))
    assert np.array_equal(seasonal_median([naive[12], naive[24]]), anchor_median(ws, val, [12, 24]))
    assert not np.array_equal(naive[12], naive[24])  # two different seasons: a median of something
