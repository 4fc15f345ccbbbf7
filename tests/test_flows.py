"""The Prefect flows against a real Prefect server, real GX, real MLflow (embedded sqlite in the project folder)."""

import numpy as np
import pandas as pd
import pytest
from conftest import one_cell

pytestmark = pytest.mark.integration


def write_series(path, n=2000, kind="seasonal", seed=0, bad_inf=False):
    """n = 2000 hourly rows: a test split of 300 rows holds 12 forecast origins a day apart (a decision
    needs evaluate.min_decision_paths = 10)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    if kind == "seasonal":
        y = 50 + 10 * np.sin(2 * np.pi * t / 24) + np.cumsum(rng.standard_normal(n)) + 0.2 * rng.standard_normal(n)
    else:  # a random walk: nothing to learn beyond the last value
        y = 100 + np.cumsum(rng.standard_normal(n))
    df = pd.DataFrame(
        {
            "time": pd.date_range("2024-01-01", periods=n, freq="h").strftime("%Y-%m-%d %H:%M"),
            "load": y,
            "temp": 15 + 5 * np.sin(2 * np.pi * t / 24 + 1),
        }
    )
    if bad_inf:
        df.loc[100, "load"] = np.inf
    df.to_csv(path, index=False)
    return {"path": str(path), "time_col": "time", "targets": ["load"], "features": ["temp"]}


def settings(name):
    from cellcast.pipeline.config import load_params

    return load_params().for_dataset(name)


def flow_runs(name):
    """[(flow run, its task runs)] of the flow called `name`, newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as c:
        runs = c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
        return [(r, c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id])))) for r in runs]


def test_data_flow_ingests_validates_and_windows(prefect_api, project, tiny_params):
    from cellcast.flows.data import data_flow

    src = write_series(project / "load.csv")
    ws = data_flow("load", settings("load"), src)
    assert all(v > 0 for v in ws.meta.counts.values())
    assert (project / "data/load/validated.parquet").is_file()
    assert (project / "reports/load/data_docs").is_dir()
    runs = flow_runs("cellcast-data")
    assert runs and runs[0][0].state.is_completed()
    assert {t.name.rsplit("-", 1)[0] for t in runs[0][1]} >= {"ingest", "validate", "window"}


def test_a_validation_failure_fails_the_flow_once_with_the_clear_message(prefect_api, project, tiny_params):
    from cellcast.flows.data import data_flow
    from cellcast.pipeline.errors import DataValidationError

    src = write_series(project / "bad.csv", bad_inf=True)
    before = (project / "bad.csv").read_bytes()
    with pytest.raises(DataValidationError, match=r"column 'load'.*finite"):
        data_flow("bad", settings("bad"), src)
    assert (project / "bad.csv").read_bytes() == before
    assert any((project / "quarantine").glob("bad-*/report.json"))
    failed = [(r, tasks) for r, tasks in flow_runs("cellcast-data") if r.state.is_failed()]
    assert failed, "the flow run is not marked failed"
    validate = [t for t in failed[0][1] if t.name.startswith("validate")]
    assert len(validate) == 1 and validate[0].run_count == 1 and validate[0].state.is_failed()


def test_training_flow_registers_a_champion_then_keeps_it_against_a_worse_model(prefect_api, project, tiny_params):
    from cellcast.flows.training import run_training
    from cellcast.pipeline.registry import tracking

    src = write_series(project / "load.csv")
    first = run_training(settings("load"), source=src)
    assert first.version == 1 and first.champion_after == 1, first.decision
    assert first.decision["promote"] and "% better (margin 2%; DM -" in first.decision["reason"]
    v1 = tracking.get_version("load-forecaster", 1)
    assert {"champion", "challenger"} <= set(v1.aliases)
    assert v1.tags["promotion.decision"] == "promoted"
    # the evidence and the rows the version was trained on travel with it
    # every test origin (stride 1) entered the test; the paths a horizon apart count as its sample size
    assert float(v1.tags["promotion.baseline_p_value"]) < float(v1.tags["promotion.first_significance"]) == 0.1
    windows, paths = int(v1.tags["promotion.baseline_windows"]), int(v1.tags["promotion.baseline_paths"])
    assert windows > paths >= 10 and paths == -(-windows // 24) and int(v1.tags["promotion.baseline_hac_lag"]) >= 23
    assert v1.tags["val_end"] == "2024-03-11 19:00:00" and v1.tags["train_start"] == "2024-01-01 00:00:00"
    # every candidate was scored by the engine that serves it
    assert {c["scored_with"] for c in first.candidates} == {"onnx"}
    for key in ("data_md5", "git_commit", "params_hash"):
        assert v1.tags.get(key) and v1.tags[key] != "unknown" or key == "git_commit"
    assert (project / "reports/load/train_summary.json").is_file()
    # the model carries the plausible ranges of its training rows: in its ONNX metadata and in MLflow
    import json

    import mlflow

    from cellcast.pipeline.engine.inference import OnnxForecaster

    trained = json.loads((project / "data/load/windows.json").read_text())["value_bounds"]
    assert set(trained) == {"load", "temp"}
    path, _ = tracking.download_model("load-forecaster", 1)
    assert OnnxForecaster.from_path(path, device="cpu").metadata["bounds"] == trained
    logged = mlflow.artifacts.load_dict(f"runs:/{v1.run_id}/bounds.json")
    assert logged["bounds"] == trained and logged["profiled_on"][0].startswith("2024-01-01")

    # an untrained model equals its anchor: it cannot beat the trained champion (one such model is enough)
    import yaml

    p = yaml.safe_load(tiny_params.read_text())
    p["train"].update({"epochs": 1, "lr": 1e-9, "max_train_windows": 64, "cells": ["rnn"]})
    tiny_params.write_text(yaml.safe_dump(p))
    second = run_training(settings("load"), source=src)
    assert second.version == 2 and not second.decision["promote"]
    assert second.champion_after == 1
    v2 = tracking.get_version("load-forecaster", 2)
    assert "challenger" in v2.aliases and "champion" not in v2.aliases
    assert v2.tags["promotion.decision"] == "rejected" and v2.tags["promotion.reason"]


def test_a_random_walk_gets_no_champion_and_says_why(prefect_api, project, tiny_params):
    """Also trains the candidates at once, each in a worker process of its own (train.task_runner: processes)."""
    from cellcast.flows.training import run_training
    from cellcast.pipeline.registry import tracking

    src = write_series(project / "walk.csv", kind="walk", seed=3)
    s = settings("walk")
    s = s.model_copy(update={"train": s.train.model_copy(update={"parallel": 3, "threads": 1})})
    out = run_training(s, source=src)
    # the three cells, their mean (train.ensemble) and the anchor alone (train.anchor_candidate), on by default
    assert sorted(c["name"] for c in out.candidates) == ["anchor", "ensemble", "gru-h8-l1", "lstm-h8-l1", "rnn-h8-l1"]
    assert out.champion_after is None and not out.decision["promote"]
    assert "no champion" in out.decision["reason"] or "does not beat" in out.decision["reason"]
    assert tracking.get_alias("walk-forecaster", "champion") is None

    # the worker processes trained each candidate exactly as training them one by one at their thread count does
    import mlflow
    import torch

    from cellcast.pipeline.data.window import load_windows
    from cellcast.pipeline.modeling.train import candidates, torch_threads, train_candidate

    runs = mlflow.search_runs(
        experiment_names=["cellcast/walk"],
        output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{out.parent_run_id}'",
    )
    logged = {r.info.run_name: r.data.metrics["best_val_loss"] for r in runs}
    ws = load_windows(s)
    before = torch.get_num_threads()
    with torch_threads(1):
        alone = {c.name: train_candidate(ws, c, s, out.baselines["anchor_season"]).best_val_loss for c in candidates(s)}
    assert {k: v for k, v in logged.items() if k not in ("ensemble", "anchor")} == alone
    assert torch.get_num_threads() == before


def test_candidates_train_in_parallel_on_a_dask_cluster(prefect_api, project, tiny_params):
    """train.task_runner: dask with no address: a local Dask cluster of worker processes, one per candidate."""
    from cellcast.flows.training import run_training, task_runner

    src = write_series(project / "load.csv")
    s = settings("load")
    s = s.model_copy(
        update={"train": s.train.model_copy(update={"task_runner": "dask", "parallel": 2, "cells": ["gru", "rnn"]})}
    )
    assert type(task_runner(s)).__name__ == "DaskTaskRunner"
    out = run_training(s, source=src)
    # the ensemble and the anchor alone: built after them
    assert sorted(c["name"] for c in out.candidates) == ["anchor", "ensemble", "gru-h8-l1", "rnn-h8-l1"]
    assert out.version == 1
    runs = [r for r, _ in flow_runs("cellcast-train") if r.state.is_completed()]
    assert runs


def test_scheduled_deployments_register_and_the_server_schedules_runs(prefect_api, project):
    """flows.deploy: a weekly training, an unscheduled retrain (the monitor's) and an hourly forecast, applied to a
    real Prefect server, whose scheduler then creates scheduled runs for them. They carry the dataset's name, never
    a copy of params.yaml."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from cellcast.flows.deploy import deployments

    ids = [d.apply() for d in deployments("elecdemand", "0 3 * * 1", "*/5 * * * *")]
    assert len(ids) == 3
    with get_client(sync_client=True) as c:
        deps = {d.name: d for d in c.read_deployments()}
        names = ("train-elecdemand", "retrain-elecdemand", "forecast-elecdemand")
        assert set(names) <= set(deps)
        crons = {n: [s.schedule.cron for s in deps[n].schedules] for n in names}
        assert crons == {
            "train-elecdemand": ["0 3 * * 1"],
            "retrain-elecdemand": [],
            "forecast-elecdemand": ["*/5 * * * *"],
        }
        assert deps["forecast-elecdemand"].parameters == {"name": "elecdemand", "refresh": True}
        assert deps["train-elecdemand"].parameters == deps["retrain-elecdemand"].parameters == {"name": "elecdemand"}
        deadline, scheduled = time.monotonic() + 60, []
        while not scheduled and time.monotonic() < deadline:
            scheduled = [
                r
                for r in c.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["forecast-elecdemand"]))
                )
                if r.state.is_scheduled()
            ]
            time.sleep(1)
        assert scheduled, "the server created no scheduled run for the hourly forecast"


def test_a_rerun_on_unchanged_data_params_and_code_registers_nothing(prefect_api, project, tiny_params, monkeypatch):
    import subprocess

    from cellcast.flows.training import run_training
    from cellcast.pipeline.registry import tracking

    for cmd in (
        ["git", "init", "-q"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "code"],
    ):
        subprocess.run(cmd, cwd=project, check=True)
    one_cell(tiny_params)
    src = write_series(project / "load.csv")
    first = run_training(settings("load"), source=src)
    assert first.champion_after == 1
    again = run_training(settings("load"), source=src)
    assert again.version is None and again.champion_after == 1
    assert "already is" in again.decision["reason"]
    assert [v.version for v in tracking.list_versions("load-forecaster")] == [1]

    # after an upgrade of cellcast (another code version) the same run is new code: it is registered, and
    # its forecasts, identical to the champion's, are no evidence to replace it
    from cellcast.pipeline.registry import lineage

    monkeypatch.setattr(lineage, "code_version", lambda: "9.9.9+0123456789ab")
    upgraded = run_training(settings("load"), source=src)
    assert upgraded.version == 2 and upgraded.champion_after == 1 and not upgraded.decision["promote"]
    assert "not significantly better than champion v1" in upgraded.decision["reason"]
    v2 = tracking.get_version("load-forecaster", 2)
    assert v2.tags["promotion.champion_dm"] == "0.0" and v2.tags["promotion.champion_p_value"] == "0.5"
    assert v2.tags["code_version"] == "9.9.9+0123456789ab"


def test_a_champion_is_never_scored_on_rows_it_trained_on(prefect_api, project, tiny_params):
    """A champion trained on newer rows than the candidate's test split: only the test windows after its
    training rows count, and too few of them is no evidence."""
    from cellcast.flows.training import run_training
    from cellcast.pipeline.registry import tracking

    one_cell(tiny_params)
    newer = write_series(project / "load.csv")
    first = run_training(settings("load"), source=newer)
    assert first.champion_after == 1
    older = write_series(project / "older.csv", n=1800)  # the first 1800 of the same rows
    out = run_training(settings("load"), source=older)
    assert out.version == 2 and out.champion_after == 1 and not out.decision["promote"], out.decision
    champ = out.champion_before
    # champion v1 trained until 03-11 19:00: 77 of the test windows (stride 1) lie after it, 4 a horizon apart
    assert champ["trained_until"] == "2024-03-11 19:00:00" and champ["windows"] == 77
    assert "only 4 test windows lie after the rows champion v1 trained on" in out.decision["reason"]
    v2 = tracking.get_version("load-forecaster", 2)
    assert v2.tags["promotion.champion_windows"] == "77" and v2.tags["promotion.champion_paths"] == "4"
    # `cellcast evaluate` reports it the same way: the champion on the 77 stride-1 test windows after its
    # training rows (targets from row 1700), the challenger on all 247
    from cellcast.pipeline.registry.report import evaluate_registered

    assert evaluate_registered(settings("load"), "champion")["metrics"]["model"]["test_windows"] == 77
    assert evaluate_registered(settings("load"), "challenger")["metrics"]["model"]["test_windows"] == 247


def test_a_candidate_with_uncalibrated_intervals_is_registered_not_promoted(prefect_api, project, tiny_params):
    """The calibration gate in the flow: an interval under-covering by more than the tolerance keeps a better
    forecast a challenger, one over-covering is reported with its width; the version says which; the candidates'
    interval scores are logged and shown."""
    import yaml

    from cellcast.flows.training import run_training
    from cellcast.pipeline.registry import summary, tracking

    one_cell(tiny_params)  # the gate and the scores are the same for any number of trained candidates
    p = yaml.safe_load(tiny_params.read_text())
    p["evaluate"]["coverage_tolerance"] = 0.001
    tiny_params.write_text(yaml.safe_dump(p))
    out = run_training(settings("load"), source=write_series(project / "load.csv"))
    assert out.version == 1
    reason, m = out.decision["reason"], out.decision["metrics"]
    best = next(c for c in out.candidates if c["name"] == out.best)
    under = [k for k in ("80", "90") if best["test"][f"coverage_{k}"] < int(k) / 100 - 0.001]
    over = [k for k in ("80", "90") if best["test"][f"coverage_{k}"] > int(k) / 100 + 0.001]
    assert under or over  # a 0.1-point tolerance: the intervals miss it one way or the other
    for k in under:
        assert f"under-covering intervals: its {k}% interval covers" in reason
        assert "(evaluate.coverage_tolerance 0.001)" in reason
    for k in over:
        assert (
            f"its {k}% interval covers {100 * best['test'][f'coverage_{k}']:.1f}% (nominal {k}%, mean width" in reason
        )
        assert m[f"width_{k}"] == pytest.approx(best["test"][f"width_{k}"], rel=1e-5)
    v1 = tracking.get_version("load-forecaster", 1)
    if under:
        assert out.champion_after is None and not out.decision["promote"]
        assert v1.tags["promotion.decision"] == "rejected" and "under-covering" in v1.tags["promotion.reason"]
    assert m["bar_winkler_90"] > 0 and m["winkler_90"] > 0  # the interval-score gate had both scores
    for c in out.candidates:
        t = c["test"]
        assert {"coverage_80", "coverage_90", "width_90", "winkler_90", "crps", "pinball"} <= set(t)
        assert c["crossings"] == 0 and len(c["interval_by_step"]["coverage_90"]) == 24
        assert c["calibration"]["windows"] > 100
        # scored walk-forward on test; the served graph carries the shift of every miss, validation and test
        assert c["calibration"]["split"] == "val+test" and c["calibration"]["test_windows"] > 0
    table = summary.summary_table(out)
    assert "cov 80%" in table and "cov 90%" in table and "quantiles conformalised on" in table
    assert "and walk-forward on" in table
