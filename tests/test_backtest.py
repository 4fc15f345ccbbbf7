"""Backtests: the folds never fit anything on their own test rows (a property over lengths, folds and horizons), the
flow end to end (MLflow parent + a child per fold, the picture), selection by the backtest mean, and the classical
reference rows (MSTL beats seasonal naive on a two-season series with a wandering level)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_TRAIN
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st


def _settings(**evaluate):
    from cellcast.pipeline.config import Params

    s = Params().for_dataset("syn")
    return s.model_copy(
        update={"train": s.train.model_copy(update=TINY_TRAIN), "evaluate": s.evaluate.model_copy(update=evaluate)}
    )


def _two_seasons(n: int, seed: int = 0, noise: float = 0.3) -> np.ndarray:
    """Hourly: a day and a week season over a random-walk level (seasonal naive lags the level; MSTL follows it)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (
        100
        + 10 * np.sin(2 * np.pi * t / 24)
        + 6 * np.sin(2 * np.pi * t / 168)
        + 0.5 * np.cumsum(rng.standard_normal(n))
        + noise * rng.standard_normal(n)
    )


def _windows(values: np.ndarray, lookback: int, horizon: int, settings=None, filled: np.ndarray | None = None):
    from cellcast.pipeline.data.window import build_windows

    s = settings or _settings()
    s = s.model_copy(
        update={
            "window": s.window.model_copy(update={"lookback": lookback, "horizon": horizon}),
            "ingest": s.ingest.model_copy(update={"min_test_horizons": 1}),
        }
    )
    frame = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=len(values), freq="h"), "y": values})
    if filled is not None:
        frame["filled:y"] = filled
    return build_windows(frame, variables=["y"], targets=["y"], freq="h", settings=s), s


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(60, 900),
    lookback=st.integers(2, 40),
    horizon=st.integers(1, 24),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_folds_are_ordered_expanding_and_never_fit_on_their_test_rows(rows, lookback, horizon, k, seed):
    from cellcast.pipeline.data.folds import fold_windowset, folds_for
    from cellcast.pipeline.modeling.evaluate import mase_scale
    from cellcast.pipeline.modeling.train import calibration_starts

    rng = np.random.default_rng(seed)
    values = rng.standard_normal(rows).cumsum() + 50
    filled = rng.random(rows) < 0.03
    try:
        ws, s = _windows(values, lookback, horizon, filled=filled)
    except Exception:  # too short for the main split's windows: no backtest either
        return
    try:
        folds = folds_for(ws, k)
    except ValueError as e:
        assert "fewer than one window" in str(e) or "shorter than the horizon" in str(e)
        return
    assert [f.index for f in folds] == list(range(1, k + 1)) and folds[-1].test_end == rows
    for a, b in zip(folds, folds[1:]):
        assert a.val_start < b.val_start and a.test_end <= b.test_start  # expanding; test blocks follow, apart
    L, H = ws.meta.lookback, ws.meta.horizon
    for f in folds:
        fws = fold_windowset(ws, f, s)
        assert len(fws.values) == f.test_end  # nothing after its test block
        tr, va, te = (fws.starts[x] for x in ("train", "val", "test"))
        assert (tr + L + H <= f.val_start).all()  # trained on rows before validation
        assert ((va + L >= f.val_start) & (va + L + H <= f.test_start)).all()
        assert ((te + L >= f.test_start) & (te + L + H <= f.test_end)).all()
        cal = calibration_starts(fws, s)
        assert (cal + L + H <= f.test_start).all()  # calibrated before its test rows
        # the scaler, the bounds, the MASE scale and the training windows: the same whatever the test rows hold
        noisy = ws.values.copy()
        noisy[f.test_start :] += 1e3 * rng.standard_normal((rows - f.test_start, 1))
        from cellcast.pipeline.data.windowset import WindowSet

        other = fold_windowset(WindowSet(noisy, ws.timestamps, ws.meta, ws.starts, ws.filled, ws.future), f, s)
        assert other.meta.mean == fws.meta.mean and other.meta.std == fws.meta.std
        assert other.meta.value_bounds == fws.meta.value_bounds
        assert np.array_equal(mase_scale(other), mase_scale(fws))
        assert all(np.array_equal(other.starts[x], fws.starts[x]) for x in ("train", "val"))


def test_the_linear_anchor_and_calibration_of_a_fold_ignore_its_test_rows():
    from cellcast.pipeline.data.folds import fold_windowset, folds_for
    from cellcast.pipeline.data.windowset import WindowSet
    from cellcast.pipeline.modeling.anchor import fit_linear_anchor

    ws, s = _windows(_two_seasons(1400), 48, 24)
    fold = folds_for(ws, 3)[1]
    fws = fold_windowset(ws, fold, s)
    noisy = ws.values.copy()
    noisy[fold.test_start :] *= -7
    other = fold_windowset(WindowSet(noisy, ws.timestamps, ws.meta, ws.starts, ws.filled, ws.future), fold, s)
    a, b = fit_linear_anchor(fws, s), fit_linear_anchor(other, s)
    assert np.array_equal(a.weight, b.weight) and a.ridge == b.ridge


def test_too_many_folds_for_the_series_is_one_clear_line():
    from cellcast.pipeline.errors import DataValidationError
    from cellcast.pipeline.registry.backtest import plan

    ws, s = _windows(_two_seasons(600), 48, 24)
    with pytest.raises(
        DataValidationError,
        match=r"^syn: backtest.folds 9: 9 folds of \d+ validation \+ \d+ test "
        r"rows leave the first fold 0 training rows .*use fewer folds",
    ):
        plan(ws, s, 9)


def test_mstl_reference_beats_seasonal_naive_on_a_two_season_series():
    from cellcast.pipeline.modeling import classical
    from cellcast.pipeline.modeling.evaluate import forecast_origins, mase_scale, metrics, seasonal_naive

    ws, s = _windows(_two_seasons(1300, seed=1), 200, 24, _settings(references=["mstl"], reference_history=1000))
    starts = forecast_origins(ws, "test")[:6]
    refs = classical.references(ws, starts, s)
    # fitted once on the rows before the first origin, rolled forward through the other five
    assert refs["mstl"].ok and refs["mstl"].fits == 1 and refs["mstl"].forecasts == 6 and refs["mstl"].history == 1000
    row = classical.reference_scores(ws, starts, refs)["mstl"]
    _, y = ws.batch(starts)
    naive = {m: metrics(y, seasonal_naive(ws, starts, m), mase_scale(ws))["mase"] for m in (24, 168)}
    assert row["mase"] < 0.9 * min(naive.values()), (row, naive)


def test_a_reference_that_fails_or_runs_past_its_budget_is_reported_not_raised():
    from cellcast.pipeline.modeling.classical import reference_forecasts

    y = _two_seasons(800)
    over = reference_forecasts(y, np.array([500, 524, 548]), 24, ["ets"], [24], budget_s=1e-4)["ets"]
    assert not over.ok and over.pred is None and over.status.startswith("over budget: ")
    broken = y.copy()
    broken[:600] = np.nan  # a break right before the origin: three observations to fit on
    failed = reference_forecasts(broken, np.array([603]), 24, ["theta"], [24], budget_s=60)["theta"]
    assert not failed.ok and failed.status.startswith("failed: ValueError: 3 observations before origin row 603")


def _project_params(project, **evaluate):
    import yaml

    p = yaml.safe_load((project / "params.yaml").read_text())
    p["train"].update(TINY_TRAIN | {"cells": ["rnn", "gru"]})
    p["evaluate"].update({"coverage_tolerance": 0.3, "references": ["mstl"], "reference_history": 400, **evaluate})
    p["backtest"].update({"folds": 2})
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def _series_csv(path, n=2000):
    t = pd.date_range("2024-01-01", periods=n, freq="h")
    pd.DataFrame({"time": t.strftime("%Y-%m-%d %H:%M"), "load": _two_seasons(n, seed=3)}).to_csv(path, index=False)
    return {"path": str(path), "time_col": "time", "targets": ["load"], "features": []}


@pytest.mark.integration
def test_backtest_flow_logs_a_parent_run_with_a_child_per_fold_and_the_picture(prefect_api, project):
    from mlflow import MlflowClient

    from cellcast.flows.backtest import backtest_flow
    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.registry import tracking

    _project_params(project)
    src = _series_csv(project / "syn.csv")
    tracking.configure(project)
    res = backtest_flow("syn", load_params().for_dataset("syn"), source=src, refit="calibration")
    assert len(res.folds) == 2 and res.refit == "calibration"
    assert res.folds[0].fold.test_end == res.folds[1].fold.test_start == 1700 and res.folds[1].fold.test_end == 2000
    # calibration: trained once, on the first fold's training rows, for both folds
    assert res.folds[0].trained_on == res.folds[1].trained_on == [0, 1100]
    client = MlflowClient()
    parent = client.get_run(res.parent_run_id)
    assert parent.data.tags["cellcast.kind"] == "backtest" and parent.data.tags["backtest.refit"] == "calibration"
    m = parent.data.metrics
    for name in ("selected", "rnn-h8-l1", "gru-h8-l1", "seasonal_naive_24", "ref_mstl"):
        assert m[f"{name}_mase_min"] <= m[f"{name}_mase_mean"] <= m[f"{name}_mase_max"], name
    assert 0 <= m["selected_coverage_80_mean"] <= 1 and m["selected_crps_mean"] > 0 and "selected_winkler_90_std" in m
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'", order_by=["tags.fold ASC"]
    )
    assert [c.data.tags["fold"] for c in children] == ["1", "2"]
    assert children[1].data.tags["fold.test_rows"] == "1700..1999"
    assert (
        children[1].data.tags["fold.trained_on_rows"] == "0..1099" and children[1].data.tags["ref.mstl.status"] == "ok"
    )
    for c, rec in zip(children, res.folds):
        assert c.data.metrics["selected_mase"] == pytest.approx(rec.scores["selected"]["mase"])
        assert c.data.metrics["origins"] == rec.origins == 12
    arts = {a.path for a in client.list_artifacts(res.parent_run_id)}
    assert {"backtest.png", "backtest.json"} <= arts
    assert (project / "reports/syn/backtest.png").stat().st_size > 10_000
    assert (project / "reports/syn/backtest.json").is_file()


@pytest.mark.integration
def test_training_with_backtest_selection_picks_by_the_backtest_mean_and_logs_the_references(prefect_api, project):
    from mlflow import MlflowClient

    from cellcast.flows.training import run_training
    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.registry import summary, tracking

    _project_params(project, selection="backtest")
    src = _series_csv(project / "syn.csv")
    tracking.configure(project)
    out = run_training(load_params().for_dataset("syn"), source=src)
    sel = out.selection
    assert sel["method"] == "backtest" and sel["folds"] == 2 and sel["rows"] == [0, 1700]  # never the test rows
    means = sel["mean_mase"]
    # their mean and the anchor alone too (train.ensemble, train.anchor_candidate, on by default)
    assert set(means) == {"rnn-h8-l1", "gru-h8-l1", "ensemble", "anchor"}
    assert means[out.best] == min(means.values())  # candidates that stayed at their anchor tie: any of them
    assert (
        f"selected by the backtest's mean MASE over 2 folds before the test split ({out.best} "
        f"{means[out.best]:.3f}; evaluate.selection: backtest)" in out.decision["reason"]
    )
    run = MlflowClient().get_run(out.parent_run_id)
    assert run.data.tags["selection"] == "backtest" and run.data.tags["ref.mstl.status"] == "ok"
    assert run.data.metrics["ref_mstl_test_mase"] == pytest.approx(out.references["mstl"]["mase"])
    assert run.data.metrics[f"backtest_{out.best}_mase_mean"] == pytest.approx(means[out.best])
    assert out.references["mstl"]["windows"] == 12 and out.references["mstl"]["fits"] == 1  # once, rolled forward
    table = summary.summary_table(out)
    assert "references (statsmodels, fitted before the first of the 12 promotion origins" in table
    assert f"  mstl   test MASE {out.references['mstl']['mase']:.3f}" in table
    # `cellcast evaluate` (the DVC stage) puts them in reports/NAME/metrics.json: `dvc metrics show` reads them
    from cellcast.pipeline.registry.report import evaluate_registered

    metrics = evaluate_registered(load_params().for_dataset("syn"), "challenger")["metrics"]
    assert metrics["references"]["mstl"]["mase"] == pytest.approx(out.references["mstl"]["mase"])
    assert metrics["references"]["mstl"]["status"] == "ok" and metrics["references"]["mstl"]["windows"] == 12


def test_selection_by_backtest_overrides_the_validation_ranking():
    from types import SimpleNamespace

    from cellcast.pipeline.registry.decision import select

    a = SimpleNamespace(name="rnn-h8-l1", val={"mase": 0.5})
    b = SimpleNamespace(name="gru-h8-l1", val={"mase": 0.9})
    best, how = select([a, b], None)
    assert best is a and how == "selected by validation MASE (rnn-h8-l1 0.500; evaluate.selection: split)"
    best, how = select([a, b], {"folds": 3, "mean_mase": {"rnn-h8-l1": 1.2, "gru-h8-l1": 0.8}})
    assert best is b and how == (
        "selected by the backtest's mean MASE over 3 folds before the test split "
        "(gru-h8-l1 0.800; evaluate.selection: backtest)"
    )


def test_backtest_command_refuses_an_unknown_refit(project):
    from typer.testing import CliRunner

    from cellcast.cli import app

    r = CliRunner().invoke(app, ["backtest", "elecdemand", "--refit", "sometimes"])
    assert (
        r.exit_code == 2
        and r.output.strip().splitlines()[-1] == "error: --refit 'sometimes': not one of retrain, calibration"
    )
