"""A panel's columns constant within each series (ingest --static, or features found constant per series): kept once
per series in raw.json, out of the rows, and read by the global model as known-future columns of kind `static`."""

import numpy as np
import pandas as pd
import pytest

from cellcast.pipeline.data.ingest import ingest_file
from cellcast.pipeline.data.validation import validate_dataset
from cellcast.pipeline.data.window import window_dataset
from cellcast.pipeline.errors import ConfigError, IngestError


def parks(project, vary: bool = False):
    """Three car parks, hourly for five weeks, each with its capacity and floor count (constant per park) and a
    temperature (varies)."""
    ts = pd.date_range("2024-01-01", periods=24 * 35, freq="h")
    rng = np.random.default_rng(0)
    rows = []
    for i, cap in enumerate((100.0, 250.0, 400.0)):
        occ = cap * (0.5 + 0.3 * np.sin(2 * np.pi * ts.hour / 24)) + rng.normal(0, 3, len(ts))
        capacity = np.full(len(ts), cap)
        if vary and i == 1:
            capacity[100:] = cap + 50
        rows.append(
            pd.DataFrame(
                {
                    "park": f"P{i}",
                    "t": ts,
                    "occ": occ,
                    "capacity": capacity,
                    "floors": i + 1.0,
                    "temp": rng.normal(5, 2, len(ts)),
                }
            )
        )
    pd.concat(rows).to_csv(project / "parks.csv", index=False)


def ingest(project, settings, **kw):
    return ingest_file(project / "parks.csv", time_col="t", targets=["occ"], id_cols=["park"], settings=settings, **kw)


def test_static_columns_are_kept_once_per_series_and_features_constant_per_series_are_found(project, settings_for):
    parks(project)
    s = settings_for("parks")
    res = ingest(project, s, features=["temp", "floors"], static=["capacity"])
    m = res.meta
    assert m.static["columns"] == ["capacity", "floors"]
    assert m.static["source"] == {"capacity": "declared", "floors": "detected"}
    assert m.static["values"]["P2"] == {"capacity": 400.0, "floors": 3.0}
    assert m.features == ["temp"] and "capacity" not in res.frame.columns and "floors" not in res.frame.columns
    # the model reads them beside the calendar, scaled over the training rows; each series its own value
    validate_dataset(s)
    ws = window_dataset(s)
    assert ws.meta.future_names[-2:] == ["capacity", "floors"] and ws.meta.future_kinds[-2:] == ["static", "static"]
    j = ws.meta.future_names.index("capacity")
    for sid, o, n in zip(ws.series_ids, ws.offsets, ws.lengths):
        assert (ws.future[o : o + n, j] == ws.meta.panel["static"][sid]["capacity"]).all()
    mean, std = ws.future_scaler()
    assert 100 < mean[j] < 400 and std[j] > 50


def test_a_static_column_that_varies_within_a_series_or_on_one_series_is_refused(project, settings_for):
    parks(project, vary=True)
    s = settings_for("parks")
    with pytest.raises(
        IngestError, match=r"column 'capacity' is not constant within series 'P1' \(250 and 300; 1 series"
    ):
        ingest(project, s, static=["capacity"])
    # a feature that varies within a series stays a feature
    assert ingest(project, s, features=["capacity"]).meta.static == {}
    with pytest.raises(ConfigError, match=r"--static: columns constant per series need a panel"):
        ingest_file(project / "parks.csv", time_col="t", targets=["occ"], static=["capacity"], settings=s)
