"""Bundled datasets: real data, offline, canonical, nothing written under $HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellcast.pipeline.data.datasets import dataset_info, list_datasets, load_bundled
from cellcast.pipeline.errors import NotFoundError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("info", list_datasets(), ids=lambda d: d.name)
def test_each_bundled_dataset_is_canonical(info):
    df = load_bundled(info.name)
    ids = ["series_id", *info.id_cols] if info.id_cols else []
    assert list(df.columns) == [*ids, "timestamp", *info.targets, *info.features]
    assert str(df["timestamp"].dtype) == "datetime64[ns]"
    assert all(df[c].dtype == np.float64 for c in [*info.targets, *info.features])
    assert len(df) == info.rows and info.variables == len(info.targets) + len(info.features)
    if info.id_cols:  # a panel: sorted by (series_id, timestamp), as many series as it says
        assert df["series_id"].nunique() == info.series > 1 and df["series_id"].is_monotonic_increasing
        assert df.groupby("series_id")["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()
    else:
        assert df["timestamp"].is_monotonic_increasing and info.series == 1
    assert info.domain and info.licence and info.description and info.source
    # the most common step is the declared frequency (the series may still have gaps)
    if info.id_cols:  # each series steps at the declared frequency (a monthly step is no fixed length)
        from cellcast.pipeline.data.frequency import infer_freq

        assert {infer_freq(g["timestamp"]) for _, g in df.groupby("series_id")} == {info.freq}
        return
    step = df["timestamp"].diff().mode().iloc[0]
    assert pd.Timestamp("2020-01-06") + step == pd.Timestamp("2020-01-06") + pd.tseries.frequencies.to_offset(info.freq)


def test_known_contents():
    e = load_bundled("elecdemand")
    assert e["timestamp"].iloc[-1] == pd.Timestamp("2014-12-31 23:30") and 2 < e["Demand"].mean() < 8
    assert set(e["WorkDay"].unique()) == {0.0, 1.0}
    g = load_bundled("glucose")
    assert g["isig"].isna().sum() == 1061 and g["glucose"].notna().all()  # the sensor's 'nil' readings
    s = load_bundled("sp500")
    assert (s["timestamp"].dt.day_of_week < 5).all() and s["adj_close"].iloc[0] == pytest.approx(1228.099976)
    c = load_bundled("chicago")
    assert c["timestamp"].iloc[0] == pd.Timestamp("2001-01-22") and c["ridership"].between(0, 40).all()
    w = load_bundled("weather")
    assert sorted(w["origin"].unique()) == ["EWR", "JFK", "LGA"] and w["wind_speed"].max() > 1000  # a real bad reading
    assert not w.duplicated(["series_id", "timestamp"]).any()  # the UTC instant: no repeated DST hour
    assert w.groupby("series_id").size().to_dict() == {"EWR": 8703, "JFK": 8706, "LGA": 8706}
    u = load_bundled("us_employment")
    first = u.dropna().groupby("series_id")["timestamp"].min()
    assert first.min() == pd.Timestamp("1939-01-01") and first.max() == pd.Timestamp("2001-01-01")


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(NotFoundError) as ei:
        load_bundled("airline")
    assert all(d.name in str(ei.value) for d in list_datasets()) and "'airline'" in str(ei.value)
    with pytest.raises(NotFoundError):
        dataset_info("airline")


def test_loading_writes_nothing_under_home(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": "", "MPLCONFIGDIR": ""}
    code = (
        "from cellcast.pipeline.data.datasets import list_datasets, load_bundled\n"
        "for d in list_datasets(): load_bundled(d.name)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)
    assert list(tmp_path.iterdir()) == []
