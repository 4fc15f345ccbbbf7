"""The long-lived monitoring run of a dataset (`monitor-NAME`): one step per evaluation of the monitor."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    pass
from .server import _client, _experiment_id, _reaching

log = logging.getLogger(__package__)  # one name for the package: what MLflow said, under one logger


# ---------------------------------------------------------------- monitoring

MONITOR_KIND = "monitor"


@_reaching
def monitoring_run(dataset: str) -> str:
    """The one long-lived monitoring run of `dataset` (run name `monitor-NAME`, tag cellcast.kind=monitor),
    created on first use; its metrics are the monitor's figures over time."""
    client = _client()
    exp_id = _experiment_id(dataset)
    found = client.search_runs(
        [exp_id], f"tags.`cellcast.kind` = '{MONITOR_KIND}'", max_results=1, order_by=["attributes.start_time ASC"]
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        exp_id, run_name=f"monitor-{dataset}", tags={"cellcast.kind": MONITOR_KIND, "dataset": dataset}
    )
    # FINISHED between updates: a run left RUNNING reads as one a killed process left open
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


@_reaching
def log_monitoring(run_id: str, metrics: dict, step: int, timestamp_ms: int, tags: dict | None = None) -> None:
    """One evaluation's figures on the monitoring run, at `step` and `timestamp_ms`; NaN figures are left out."""
    from mlflow.entities import Metric, RunTag

    ms = [
        Metric(str(k), float(v), int(timestamp_ms), int(step))
        for k, v in metrics.items()
        if v is not None and np.isfinite(float(v))
    ]
    ts = [RunTag(str(k), str(v)) for k, v in (tags or {}).items()]
    client = _client()
    for i in range(0, max(len(ms), 1), 1000):  # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=ms[i : i + 1000], tags=ts if i == 0 else [])
    client.set_terminated(run_id, status="FINISHED")


@_reaching
def run_tags(run_id: str) -> dict:
    return dict(_client().get_run(run_id).data.tags)


@_reaching
def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of a run's metric, in step order."""
    return sorted((m.step, m.value) for m in _client().get_metric_history(run_id, key))
