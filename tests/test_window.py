"""Windowing: chronological splits without leakage, a train-only scaler, windows as views."""

import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch

from cellcast.pipeline.config import Params
from cellcast.pipeline.data.frequency import seasons_for
from cellcast.pipeline.data.splits import complete_windows, resolve_window
from cellcast.pipeline.data.window import build_windows, load_windows, save_windows
from cellcast.pipeline.errors import ConfigError, DataValidationError


def frame(n=2000, freq="h", seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2020-01-01", periods=n, freq=freq),
            "load": 10 + np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(n),
            "temp": 20 + 5 * np.sin(2 * np.pi * t / (24 * 7)),
        }
    )


def settings(lookback=48, horizon=12, ingest=None, calendar=None, **window):
    # no calendar unless asked: these tests are about the windows (the default calendar has its own test below)
    return Params(
        window={"lookback": lookback, "horizon": horizon, **window},
        ingest=ingest or {},
        calendar={"parts": []} if calendar is None else calendar,
    ).for_dataset("t")


def make(df=None, **kw):
    df = frame() if df is None else df
    return build_windows(df, variables=["load", "temp"], targets=["load"], freq="h", settings=settings(**kw))


def test_splits_are_chronological_and_targets_stay_in_their_split():
    ws = make()
    L, H = ws.meta.lookback, ws.meta.horizon
    val, test = ws.meta.bounds["val"], ws.meta.bounds["test"]
    tr, va, te = ws.starts["train"], ws.starts["val"], ws.starts["test"]
    assert len(tr) and len(va) and len(te)
    assert (tr + L + H <= val).all(), "a train window reads a validation row"
    assert ((va + L >= val) & (va + L + H <= test)).all()
    assert (te + L >= test).all() and (te + L + H <= ws.meta.rows).all()
    assert tr.max() < va.min() < te.min()


def test_scaler_is_fitted_on_train_rows_only():
    df = frame()
    a = make(df)
    later = df.copy()
    later.loc[a.meta.bounds["val"] :, ["load", "temp"]] *= 1000  # change only validation and test rows
    b = make(later)
    assert a.meta.mean == b.meta.mean and a.meta.std == b.meta.std
    assert np.isclose(a.meta.mean[0], df["load"][: a.meta.bounds["val"]].mean(), rtol=1e-6)


def test_windows_are_views_not_copies():
    ws = make()
    v = ws.view()
    assert np.shares_memory(v, ws.values)
    assert v.shape == (ws.meta.rows - ws.span + 1, ws.span, 2)
    s = ws.starts["val"][5]
    x, y = ws.batch(np.array([s]))
    np.testing.assert_array_equal(x[0], ws.values[s : s + ws.meta.lookback])
    np.testing.assert_array_equal(y[0, :, 0], ws.values[s + ws.meta.lookback : s + ws.span, 0])


def test_memory_grows_with_the_series_not_with_lookback():
    df = frame(20000)
    peaks = {}
    for L in (24, 24 * 40):
        tracemalloc.start()
        ws = make(df, lookback=L, horizon=24)
        assert ws.view().shape[0] == ws.meta.rows - ws.span + 1
        ws.batch(ws.starts["train"][:256])  # a batch copies only its own windows
        peaks[L] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # a materialised window array at L=960 would be 20000*984*2*4 bytes = 157 MB
    assert peaks[24 * 40] < 1.5 * peaks[24] + 2_000_000, peaks


def test_torch_windows_match_numpy_and_unfold_is_a_view():
    ws = make()
    tw = ws.to_torch("cpu")
    assert tw.windows.untyped_storage().data_ptr() == tw.series.untyped_storage().data_ptr()
    idx = ws.starts["test"][:7]
    xt, yt = tw.batch(torch.from_numpy(idx))
    xn, yn = ws.batch(idx)
    np.testing.assert_array_equal(xt.numpy(), xn)
    np.testing.assert_array_equal(yt.numpy(), yn)


def test_windows_never_cross_a_break():
    df = frame()
    df.loc[700:720, ["load", "temp"]] = np.nan  # a long gap kept as a break
    ws = make(df)
    for starts in ws.starts.values():
        for s in starts:
            assert not (s <= 720 and s + ws.span > 700)
    assert complete_windows(ws.values, ws.span).sum() == sum(
        1 for s in range(ws.meta.rows - ws.span + 1) if not (s <= 720 and s + ws.span > 700)
    )


def test_stride_thins_train_windows():
    a, b = make(stride=1), make(stride=4)
    assert len(b.starts["train"]) == -(-len(a.starts["train"]) // 4)
    assert (np.diff(b.starts["train"]) == 4).all()


def test_too_short_for_one_window_in_each_split_is_a_clear_error():
    with pytest.raises(DataValidationError, match=r"give 0 (train|val|test) window"):
        make(frame(80))


def test_save_and_load_round_trip(tmp_path):
    s = settings()
    s.paths.data = tmp_path / "data"
    ws = build_windows(frame(), variables=["load", "temp"], targets=["load"], freq="h", settings=s)
    save_windows(ws, s)
    back = load_windows(s)
    np.testing.assert_array_equal(back.values, ws.values)
    assert back.meta == ws.meta
    for k in ws.starts:
        np.testing.assert_array_equal(back.starts[k], ws.starts[k])
    # the windows are dataset t's: another dataset's settings would file them under its name, and are refused
    other = s.model_copy(update={"dataset": "u"})
    with pytest.raises(ConfigError, match=r"^windows of dataset 't' given with the settings of dataset 'u'$"):
        save_windows(ws, other)
    assert not (tmp_path / "data" / "u").exists()


@pytest.mark.parametrize(
    "freq,seasons",
    [
        ("30min", [48, 336]),
        ("h", [24, 168]),
        ("D", [7, 365]),
        ("B", [5]),
        ("MS", [12]),
        ("W-SUN", [52]),
        ("QS", [4]),
        ("YS", []),
        ("5min", [288, 2016]),
    ],
)
def test_natural_seasons(freq, seasons):
    assert seasons_for(freq) == seasons


def test_auto_window_follows_the_frequency():
    s = Params().for_dataset("x")
    assert resolve_window(s, "30min", 17520) == (336 + s.train.rnn_steps, 48)
    assert resolve_window(s, "D", 5000)[1] == 7
    assert resolve_window(Params(window={"lookback": 10, "horizon": 3}).for_dataset("x"), "D", 5000) == (10, 3)


@pytest.mark.parametrize(
    "freq,rows,horizon",
    [
        ("MS", 204, 6),  # 17 years of months: a year ahead leaves 5 paths in 30%: half a year ahead holds 10
        ("MS", 486, 12),  # 40 years: the season fits
        ("W-SUN", 283, 8),  # 5.4 years of weeks
        ("W-SUN", 2284, 52),
        ("QS-JAN", 218, 4),
        ("D", 365, 7),
        ("MS", 20, 1),  # never below one step
    ],
)
def test_auto_horizon_of_a_short_series_leaves_room_for_a_decision(freq, rows, horizon):
    from cellcast.pipeline.data.splits import split_for, test_origins, window_starts

    s = Params().for_dataset("x")
    lookback, h = resolve_window(s, freq, rows)
    assert h == horizon
    v, t = split_for(rows, h, s)
    paths = test_origins(window_starts(rows, lookback, h, v, t)["test"], h)
    assert paths >= s.evaluate.min_decision_paths or h == 1
    # an explicit horizon is the user's; a panel keeps the season (promotion pools its series' paths)
    assert resolve_window(Params(window={"horizon": 12}).for_dataset("x"), freq, rows)[1] == 12
    assert resolve_window(s, "MS", 204, panel=True)[1] == 12


def _panel_meta(rows: list[int]) -> dict:
    return {"freq": "MS", "panel": {"series": {f"S{i}": {"rows": n} for i, n in enumerate(rows)}}}


def test_a_short_panel_splits_by_the_rule_of_one_short_series_its_series_pooling_the_decision_paths():
    """Five series of ten years of months (the stocks panel's shape): one of them alone is forecast 3 months ahead
    and its test split grows to 30% for 10 paths; five together hold 10 paths of a year ahead when each test split
    grows to 3 years, and each needs its share (2 of the 10), not 5 of its own."""
    from cellcast.pipeline.data.panel_validation import panel_window
    from cellcast.pipeline.data.splits import (
        panel_test_rule,
        series_test_need,
        split_for,
        test_horizons,
        test_origins,
        window_shortfall,
        window_starts,
    )

    s = Params().for_dataset("x")
    paths = s.evaluate.min_decision_paths
    assert resolve_window(s, "MS", 123)[1] == 3  # one series: the horizon shrinks, as before
    assert (series_test_need(s, 1), test_horizons(s, [123], 12, 3)) == (s.ingest.min_test_horizons, paths)
    stocks = [123, 123, 68, 123, 123]
    lookback, horizon, basis = panel_window(_panel_meta(stocks), s)
    assert (lookback, horizon, basis) == (12, 12, 123)  # the pooled paths hold the year
    rule = panel_test_rule(_panel_meta(stocks), s, lookback, horizon)
    assert rule == {"test_horizons": 3, "test_need": 2}
    pooled = 0
    for n in (123, 123, 123, 123):
        v, t = split_for(n, horizon, s, rule["test_horizons"])
        assert n - t == 36 and t - v == 18  # 3 years of test (30%), the validation share kept
        st = window_starts(n, lookback, horizon, v, t)
        assert window_shortfall(st, horizon, s, rule["test_need"]) is None  # splits of its own
        assert window_shortfall(st, horizon, s) is not None  # 5 of its own, as before: cold start
        pooled += test_origins(st["test"], horizon)
    assert pooled >= paths  # what the decision weighs
    # the 68 months' series has no validation window of a year: cold start, saying why
    v, t = split_for(68, horizon, s, rule["test_horizons"])
    assert window_shortfall(window_starts(68, lookback, horizon, v, t), horizon, s, 2) == (
        "min_windows",
        "0 val window(s), need 1 per split",
    )
    # a long panel keeps its 15% test split and the season (the bundled panels: unchanged)
    assert panel_window(_panel_meta([500] * 148), s)[1] == 12
    assert panel_test_rule(_panel_meta([500] * 148), s, 12, 12) == {"test_horizons": 1, "test_need": 1}
    assert split_for(500, 12, s, 1) == split_for(500, 12, s, 0) == (350, 425)
    # a panel of one series is one series
    assert panel_window(_panel_meta([123]), s)[1] == 3
    assert panel_test_rule(_panel_meta([123]), s, 12, 3) == {"test_horizons": paths, "test_need": 5}


def test_a_panel_whose_series_are_far_too_short_is_cold_start_with_the_reason_and_the_setting_that_fixes_it():
    from cellcast.pipeline.data.splits import panel_remedy, panel_test_rule, split_for, window_shortfall, window_starts

    s = Params(window={"horizon": 12, "lookback": 12}).for_dataset("x")
    short = [40] * 5  # three years and a bit: no validation year, no room for a test year after training
    rule = panel_test_rule(_panel_meta(short), s, 12, 12)
    v, t = split_for(40, 12, s, rule["test_horizons"])
    why = window_shortfall(window_starts(40, 12, 12, v, t), 12, s, rule["test_need"])
    assert why is not None and why[0] == "min_windows" and "0 " in why[1] and "need 1 per split" in why[1]
    remedy = panel_remedy(s, short, 12, 12)
    assert remedy.startswith("set window.horizon: ") and remedy.endswith(
        "in params.yaml (the longest series then holds splits of its own)"
    )
    h = int(remedy.split(": ")[1].split()[0])
    assert 1 <= h < 12
    rule = panel_test_rule(_panel_meta(short), s, 12, h)
    v, t = split_for(40, h, s, rule["test_horizons"])
    assert window_shortfall(window_starts(40, 12, h, v, t), h, s, rule["test_need"]) is None  # the fix fixes it
    assert panel_remedy(s, [10] * 5, 12, 12) == "supply more rows (the longest series has 10)"


def test_auto_lookback_leaves_out_seasons_longer_than_its_cap():
    s = Params().for_dataset("x")
    # a week of 5-minute steps (2016) would fit 60,000 rows ten times over: the day is kept instead
    assert resolve_window(s, "5min", 60000) == (288 + s.train.rnn_steps, 288)
    assert resolve_window(s, "15min", 60000)[0] == 672 + s.train.rnn_steps  # a week of quarter hours stays
    assert resolve_window(s, "h", 20000) == (168 + s.train.rnn_steps, 24)


@pytest.mark.parametrize(
    "n,freq,country,names",
    [
        (2000, "h", None, ["tod_sin", "tod_cos", "dow_sin", "dow_cos"]),  # 83 days
        (400, "D", None, ["dow_sin", "dow_cos"]),  # training rows: 280 days
        (1500, "D", None, ["dow_sin", "dow_cos", "doy_sin", "doy_cos"]),  # training rows: 1050 days
        (1500, "D", "US", ["dow_sin", "dow_cos", "doy_sin", "doy_cos", "holiday"]),
    ],
)
def test_the_default_calendar_is_resolved_from_the_frequency_and_the_training_span(n, freq, country, names):
    s = Params(window={"lookback": 14, "horizon": 7}, calendar={"country": country}).for_dataset("t")
    assert s.calendar.parts == "auto"
    ws = build_windows(frame(n, freq=freq), variables=["load", "temp"], targets=["load"], freq=freq, settings=s)
    assert ws.meta.future_names == names and ws.future.shape == (n, len(names))
    # what the model and its metadata carry: the parts as resolved, never 'auto'
    assert ws.meta.calendar["parts"] == [
        p for p in ("tod", "dow", "doy", "holiday") if f"{p}_sin" in names or p in names
    ]


def test_auto_lookback_shrinks_for_a_short_series():
    s = Params().for_dataset("x")
    lookback, horizon = resolve_window(s, "D", 300)
    assert lookback == 30 and horizon == 7
    df = frame(300, freq="D")
    ws = build_windows(df, variables=["load", "temp"], targets=["load"], freq="D", settings=s)
    assert min(ws.meta.counts.values()) > 0


def test_the_window_stage_wants_enough_non_overlapping_test_windows():
    # 200 rows, the test split at its share (no growth): 30 test rows, 19 test windows of horizon 12: 2 that do not
    # overlap
    kept = {"test_fraction_max": 0.15}
    with pytest.raises(DataValidationError, match=r"2 non-overlapping test window\(s\) of horizon 12, need 3"):
        make(frame(200), ingest={"min_test_horizons": 3}, **kept)
    assert len(make(frame(200), ingest={"min_test_horizons": 2}, **kept).starts["test"]) == 19
    # grown as far as window.test_fraction_max allows (60 rows): 5 horizons, enough
    assert len(make(frame(200), ingest={"min_test_horizons": 3}).starts["test"]) == 49


# ------------------------------------------------------- filled points: never read past an origin, never scored


def _filled(df: pd.DataFrame, settings_over: dict | None = None):
    """The validation policy on `df` (short gaps interpolated), then the windows of its result."""
    from cellcast.pipeline.data.validation import validate_frame

    s = Params(window={"lookback": 48, "horizon": 12}, **(settings_over or {})).for_dataset("t")
    rep = validate_frame(df, {"targets": ["load"], "features": ["temp"], "freq": "h"}, s, quarantine=False)
    ws = build_windows(rep.frame, variables=["load", "temp"], targets=["load"], freq="h", settings=s)
    return rep, ws


def test_validated_frame_says_which_cells_were_filled():
    df = frame()
    df.loc[500:502, "load"] = np.nan  # 3 cells of one column
    df = df.drop(index=[900, 901])  # 2 missing grid points: both columns
    rep, ws = _filled(df)
    out = rep.frame
    assert out["filled:load"].sum() == 5 and out["filled:temp"].sum() == 2
    assert out.loc[500:502, "filled:load"].all() and not out.loc[499, "filled:load"]
    assert rep.filled == {"load": 5, "temp": 2}
    assert ws.filled is not None and ws.filled.sum() == 7


def test_no_window_reads_a_value_interpolated_from_after_its_origin():
    df = frame()
    df.loc[1000:1003, ["load", "temp"]] = np.nan  # a gap filled from rows 999 and 1004
    later = df.copy()
    later.loc[1004:, ["load", "temp"]] += 50.0  # everything after the gap differs
    (_, a), (_, b) = _filled(df), _filled(later)
    L = a.meta.lookback
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a.starts[split], b.starts[split])
        s = a.starts[split]
        before = s[s + L - 1 < 1004]  # origins before the row the fill was drawn from
        xa, _ = a.batch(before)
        xb, _ = b.batch(before)
        np.testing.assert_array_equal(xa, xb)  # their inputs cannot know what came after them
    every = np.concatenate(list(a.starts.values()))
    assert not ((every + L - 1 >= 1000) & (every + L - 1 <= 1003)).any()  # no origin inside the gap
    assert ((every + L - 1 >= 1004) & (every <= 1000)).any()  # windows reading the fill after it: kept


def test_filled_targets_are_masked_and_windows_with_only_filled_targets_dropped():
    df = frame()
    df.loc[1500:1503, "load"] = np.nan
    _, ws = _filled(df)
    L, H = ws.meta.lookback, ws.meta.horizon
    s = ws.starts["val"]
    m = ws.target_mask(s)
    assert m.shape == (len(s), H, 1) and m.dtype == bool
    rows = s[:, None] + L + np.arange(H)[None, :]
    np.testing.assert_array_equal(~m[:, :, 0], (rows >= 1500) & (rows <= 1503))
    assert ws.target_mask(ws.starts["train"]) is not None
    # horizon 1: the windows whose one target is a fill have nothing to score and are gone
    df2 = frame()
    df2.loc[1500:1503, "load"] = np.nan
    s2 = Params(window={"lookback": 48, "horizon": 1}).for_dataset("t")
    from cellcast.pipeline.data.validation import validate_frame

    rep = validate_frame(df2, {"targets": ["load"], "features": ["temp"], "freq": "h"}, s2, quarantine=False)
    ws2 = build_windows(rep.frame, variables=["load", "temp"], targets=["load"], freq="h", settings=s2)
    every = np.concatenate(list(ws2.starts.values()))
    assert not np.isin(np.arange(1500, 1504) - 48, every).any()


def test_scaler_and_window_files_keep_the_fill_mask(tmp_path):
    df = frame()
    df.loc[100:103, "load"] = 1e6  # absurd values where the cells were filled ...
    df["filled:load"] = False
    df["filled:temp"] = False
    df.loc[100:103, "filled:load"] = True  # ... are not observations: the scaler ignores them
    s = settings()
    s.paths.data = tmp_path / "data"
    ws = build_windows(df, variables=["load", "temp"], targets=["load"], freq="h", settings=s)
    assert ws.meta.mean[0] < 20
    save_windows(ws, s)
    back = load_windows(s)
    np.testing.assert_array_equal(back.filled, ws.filled)
    tw = back.to_torch("cpu")
    idx = back.starts["train"][:5]
    np.testing.assert_array_equal(tw.target_mask(torch.from_numpy(idx)).numpy(), back.target_mask(idx))
    idx = np.concatenate([back.starts[k] for k in ("train", "val", "test")])  # the GPU path, gathered the same way
    np.testing.assert_array_equal(tw.device_target_mask(torch.from_numpy(idx)).numpy(), back.target_mask(idx))
    assert back.target_mask(idx)[:, :, 0].sum() < back.target_mask(idx).size  # some targets really are masked
    assert make().filled is None and make().target_mask(make().starts["test"]) is None


def test_the_target_mask_reads_the_fill_mask_in_place_whatever_the_target_columns():
    """A set keeps no inverted copy of its fill mask (1 byte a row): the targets' columns are a view of it where
    they neighbour each other; the windows' mask and the observations are what inverting it whole gives, for the
    targets first, last, or apart."""
    rng = np.random.default_rng(3)
    n, names = 400, ["a", "b", "c"]
    values = rng.normal(size=(n, 3)).astype(np.float32)
    filled = rng.random((n, 3)) < 0.2
    for targets in (["a"], ["b", "c"], ["a", "c"]):
        s = settings()
        ws = build_windows(
            pd.DataFrame(values, columns=names, index=pd.date_range("2024-01-01", periods=n, freq="h"))
            .rename_axis("timestamp")
            .reset_index()
            .assign(**{f"filled:{c}": filled[:, i] for i, c in enumerate(names)}),
            variables=names,
            targets=targets,
            freq="h",
            settings=s,
        )
        tidx = ws.meta.target_idx
        observed = ~ws.filled[:, tidx]
        assert np.shares_memory(ws._filled_targets, ws.filled) == (targets != ["a", "c"])
        idx = np.concatenate([ws.starts[k] for k in ("train", "val", "test")])
        rows = idx[:, None] + ws.meta.lookback + np.arange(ws.meta.horizon)
        np.testing.assert_array_equal(ws.target_mask(idx), observed[rows])
        np.testing.assert_array_equal(ws._observed, observed)
        y = ws.values[:, tidx]
        np.testing.assert_array_equal(ws.observed_target_series(), np.where(observed, y, np.nan))


# ---------------------------------------------------------------- plausible bounds: profiled on the training rows


def test_bounds_are_profiled_on_observed_training_rows_only():
    df = frame()
    a = make(df)
    train = df.iloc[: a.meta.bounds["val"]]
    lo, hi = train["load"].min(), train["load"].max()
    t = Params().validate_.profile_tolerance
    assert a.meta.value_bounds["load"] == pytest.approx([lo - t * (hi - lo), hi + t * (hi - lo)])
    assert set(a.meta.value_bounds) == {"load", "temp"}
    later = df.copy()
    later.loc[a.meta.bounds["val"] :, "load"] *= 1000  # validation and test rows do not move them
    assert make(later).meta.value_bounds == a.meta.value_bounds
    filled = df.copy()
    filled.loc[10:12, "load"], filled["filled:load"] = 1e6, False
    filled.loc[10:12, "filled:load"] = True  # nor do filled cells
    assert make(filled).meta.value_bounds["load"] == pytest.approx(a.meta.value_bounds["load"], rel=0.05)
    declared = Params(window={"lookback": 48, "horizon": 12}, validate={"bounds": {"load": [0, 20]}}).for_dataset("t")
    ws = build_windows(df, variables=["load", "temp"], targets=["load"], freq="h", settings=declared)
    assert ws.meta.value_bounds["load"] == [0, 20]  # declared ranges win


def _with_future(tmp_path=None):
    df = frame(1200)
    df["promo"] = (np.arange(len(df)) % 50 < 5).astype(float)  # a planned promotion: known ahead
    s = Params(
        window={"lookback": 48, "horizon": 12}, calendar={"parts": ["tod", "dow", "holiday"], "country": "US"}
    ).for_dataset("t")
    if tmp_path is not None:
        s.paths.data = tmp_path / "data"
    ws = build_windows(
        df,
        variables=["load", "temp", "promo"],
        targets=["load"],
        freq="h",
        settings=s,
        future_features=["promo"],
    )
    return df, s, ws


def test_each_window_gets_the_known_future_rows_of_its_horizon_as_a_view(tmp_path):
    from cellcast.pipeline.data.calendar import calendar_features

    df, s, ws = _with_future(tmp_path)
    m = ws.meta
    assert m.future_names == ["tod_sin", "tod_cos", "dow_sin", "dow_cos", "holiday", "promo"]
    assert m.future_kinds == ["calendar"] * 5 + ["user"] and m.calendar["country"] == "US"
    cal, _ = calendar_features(df["timestamp"], "h", s.calendar)
    table = np.concatenate([cal, df[["promo"]].to_numpy(np.float32)], axis=1)
    np.testing.assert_array_equal(ws.future, table)
    assert ws.future[df.index[df["timestamp"] == "2020-01-01 05:00"][0], 4] == 1.0  # New Year's Day
    starts = ws.starts["test"][[0, 3, 17]]
    f = ws.future_batch(starts)
    assert f.shape == (3, m.horizon, 6)
    for i, st in enumerate(starts):  # origin o = st + lookback: rows [o, o + horizon)
        np.testing.assert_array_equal(f[i], table[st + m.lookback : st + m.lookback + m.horizon])
    # the per-window blocks are a strided view of the one table: memory stays flat
    view = np.lib.stride_tricks.sliding_window_view(ws.future, m.horizon, axis=0)
    assert np.shares_memory(view, ws.future)
    tw = ws.to_torch("cpu")
    np.testing.assert_array_equal(tw.future(torch.from_numpy(starts)).numpy(), f)
    assert tw.future_windows.untyped_storage().data_ptr() == ws.future.ctypes.data  # unfold: a view, no copy

    save_windows(ws, s)
    back = load_windows(s)
    assert back.meta == ws.meta
    np.testing.assert_array_equal(back.future_batch(starts), f)


def test_a_window_set_without_known_future_inputs_has_none():
    ws = make()
    assert ws.future is None and ws.future_batch(ws.starts["test"][:3]) is None and ws.meta.future_names == []
    assert ws.to_torch("cpu").future(torch.tensor([0])) is None
    with pytest.raises(DataValidationError, match="known-future column\\(s\\) promo not in the data"):
        build_windows(
            frame(),
            variables=["load", "temp"],
            targets=["load"],
            freq="h",
            settings=settings(),
            future_features=["promo"],
        )


def test_scoring_a_registered_model_on_later_test_windows_keeps_the_fill_mask_and_future_table():
    """report._unseen re-cut the test split into a window set without the fill mask: filled targets were scored."""
    from cellcast.pipeline.registry.report import _unseen

    df = frame()
    df.loc[1900:1903, "load"] = np.nan
    _, ws = _filled(df)
    until = str(pd.Timestamp(ws.timestamps[ws.starts["test"][10] + ws.meta.lookback]))
    later = _unseen(ws, until, 1)
    assert len(later.starts["test"]) < len(ws.starts["test"])
    mask = later.target_mask(later.starts["test"])
    assert mask is not None and not mask.all()
    _, _, fws = _with_future()
    assert _unseen(fws, str(pd.Timestamp(fws.timestamps[-40])), 1).future is fws.future


def test_read_only_arrays_from_pandas_reach_torch_without_a_warning():
    """pandas 3 hands out read-only views (copy-on-write); torch.from_numpy warns on those. The window set keeps
    arrays of its own, so the trainer's tensors never alias memory torch must not write."""
    import warnings

    from cellcast.pipeline.data.windowset import WindowMeta, WindowSet

    df = pd.DataFrame({"y": np.arange(60, dtype=np.float32), "f": np.ones(60, dtype=np.float32)})
    values, future = df[["y"]].to_numpy(np.float32), df[["f"]].to_numpy(np.float32)
    assert not values.flags.writeable and not future.flags.writeable  # what pandas gives
    meta = WindowMeta(
        name="ro",
        variables=["y"],
        targets=["y"],
        freq="h",
        lookback=8,
        horizon=4,
        stride=1,
        rows=60,
        bounds={"val": 40, "test": 50},
        counts={},
        mean=[0.0],
        std=[1.0],
        start="",
        end="",
        split_times={},
    )
    starts = {"train": pd.Series(np.arange(20)).to_numpy()}
    ws = WindowSet(values, df.index.to_numpy(), meta, starts, future=future)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tw = ws.to_torch("cpu")
    assert ws.values.flags.writeable and float(tw.series[5, 0]) == 5.0


@pytest.mark.parametrize(
    "rows,horizon,share",
    [
        (20_000, 24, 0.15),  # a long series: 15% holds far more than 10 horizons
        (365, 7, 70 / 365),  # a year of days, a week ahead: grown to 10 weeks (19%)
        (200, 12, 0.30),  # 200 months, a year ahead: 10 years is more than 30%, so 30%
    ],
)
def test_the_test_split_grows_to_hold_the_horizons_promotion_needs(rows, horizon, share):
    from cellcast.pipeline.data.splits import split_for, test_origins, window_starts

    s = Params(window={"lookback": 14, "horizon": horizon}).for_dataset("x")
    v, t = split_for(rows, horizon, s)
    assert rows - t == int(round(rows * share)) or rows - t == int(rows * share)
    assert t - v == round(rows * s.window.val_fraction)  # the validation split keeps its share
    paths = test_origins(window_starts(rows, 14, horizon, v, t)["test"], horizon)
    assert paths >= min(s.evaluate.min_decision_paths, int(rows * s.window.test_fraction_max) // horizon)


def test_a_test_share_cap_below_the_share_is_refused():
    from cellcast.pipeline.errors import ConfigError

    with pytest.raises((ValueError, ConfigError), match="test_fraction_max 0.1 is below test_fraction 0.15"):
        Params(window={"test_fraction_max": 0.1})


def test_a_panels_auto_lookback_holds_two_of_its_longest_season_where_its_median_series_allows():
    s = Params().for_dataset("x")
    k = s.train.rnn_steps
    # a year of hours in each of 30 series: last week and the week before side by side
    assert resolve_window(s, "h", 8760, pooled_rows=30 * 8760, panel=True)[0] == 2 * 168 + k
    assert resolve_window(s, "h", 8760)[0] == 168 + k  # one series keeps one season
    # a median series too short for two weeks in a quarter of its rows: one week, capped as before
    assert resolve_window(s, "h", 1000, pooled_rows=30 * 1000, panel=True)[0] == min(168 + k, 100)
    one = Params(window={"lookback_seasons": 1}).for_dataset("x")
    assert resolve_window(one, "h", 8760, pooled_rows=30 * 8760, panel=True)[0] == 168 + k
    three = Params(window={"lookback_seasons": 3}).for_dataset("x")
    assert resolve_window(three, "h", 20000)[0] == 3 * 168 + k  # a long single series, when asked


def test_a_short_series_auto_lookback_holds_the_seasons_asked_where_a_fifth_of_its_rows_hold_them():
    s = Params(window={"min_lookback_seasons": 1}).for_dataset("x")
    assert resolve_window(s, "MS", 192)[0] == 19  # one season: a tenth of 16 years of months
    assert resolve_window(s, "W", 283)[0] == 28  # and under one season of weeks: never lengthened
    three = Params().for_dataset("x")  # the default: three
    assert resolve_window(three, "MS", 192)[0] == 36  # three years, a fifth of the rows holds them
    assert resolve_window(three, "MS", 170)[0] == 17  # 36 months are more than a fifth of 170: a tenth, as before
    assert resolve_window(three, "QS", 218)[0] == 21  # already over three years of quarters: kept
    # a lookback the rows did not cut keeps its rule: 26 years of weeks, 180 days of 5-minute readings
    assert resolve_window(three, "W", 1355)[0] == resolve_window(s, "W", 1355)[0] == 52 + 48
    assert resolve_window(three, "5min", 52000)[0] == resolve_window(s, "5min", 52000)[0] == 288 + 48
    # a panel's lookback is its own rule
    assert (
        resolve_window(three, "MS", 192, pooled_rows=30 * 192, panel=True)[0]
        == resolve_window(s, "MS", 192, pooled_rows=30 * 192, panel=True)[0]
    )
