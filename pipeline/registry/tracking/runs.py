"""Runs: the parent run of a flow run and a nested run per candidate, what is logged on them, and the runs a killed
process left open (ended KILLED by the next run on the same host)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import mlflow

from ...errors import TrackingUnavailableError
from ...files import owner, owner_gone

if TYPE_CHECKING:  # pragma: no cover
    pass
from .server import (
    _client,
    _drop_active_run,
    _end_run,
    _experiment_id,
    _is_connection_error,
    _lock,
    _reaching,
    _start_run,
    _state,
    experiment_name,
)

log = logging.getLogger(__package__)  # one name for the package: what MLflow said, under one logger


# ---------------------------------------------------------------- runs a killed process left open

OWNER_TAGS = ("cellcast.host", "cellcast.pid", "cellcast.process_started")


def _owner() -> dict[str, str]:
    return {f"cellcast.{k}": v for k, v in owner().items()}


def _orphaned(run) -> bool:
    """A RUNNING run whose owning process, on this host, is gone (or is another process with its pid)."""
    tags = run.data.tags
    return owner_gone({k[len("cellcast.") :]: v for k, v in tags.items() if k in OWNER_TAGS})


@_reaching
def end_orphans(dataset: str) -> list[str]:
    """End KILLED the runs of `dataset`'s experiment left RUNNING by a process of this host that is gone
    (kill -9, a lost machine session), with a tag saying why; returns their ids. Runs of live processes
    (a concurrent train) and of other hosts are left alone."""
    client = _client()
    exp = client.get_experiment_by_name(experiment_name(dataset))
    if exp is None:
        return []
    running = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
    ended = []
    for run in running:
        if not _orphaned(run):
            continue
        t = run.data.tags
        reason = (
            f"process {t['cellcast.pid']} on {t['cellcast.host']} ended without closing this run "
            f"(killed?); found by process {os.getpid()}"
        )
        client.set_tag(run.info.run_id, "cellcast.ended_reason", reason)
        client.set_terminated(run.info.run_id, status="KILLED")
        ended.append(run.info.run_id)
        log.warning(
            "run %s (%s) was left RUNNING by a process that is gone: ended KILLED", run.info.run_id, run.info.run_name
        )
    return ended


# ---------------------------------------------------------------- runs


@contextmanager
def parent_run(dataset: str, run_name: str | None = None, tags: dict | None = None) -> Iterator[str]:
    """A run for one pipeline execution on `dataset`; candidates nest under it. Ends FAILED on an exception.

    The run is tagged with the process that owns it (host, pid, process start time); runs of this
    dataset left RUNNING by a process that is gone (killed) are ended KILLED first (`end_orphans`)."""
    exp_id = _experiment_id(dataset)
    end_orphans(dataset)
    run = _start_run(experiment_id=exp_id, run_name=run_name, tags=_str_tags({**(tags or {}), **_owner()}))
    rid = run.info.run_id
    with _lock:
        _state["parents"].append(rid)
    try:
        with _ending():
            yield rid
    finally:
        with _lock:
            if rid in _state["parents"]:
                _state["parents"].remove(rid)


@contextmanager
def _ending() -> Iterator[None]:
    """End the active run FINISHED, or FAILED when the block raises. With the server unreachable the run
    is only dropped here (another round of retries would double the wait): it stays RUNNING on the
    server until the next run of its dataset finds its process gone and ends it KILLED."""
    try:
        yield
    except BaseException as e:
        if isinstance(e, TrackingUnavailableError) or _is_connection_error(e):
            _drop_active_run()
        else:
            _end_run("FAILED")
        raise
    else:
        _end_run("FINISHED")


def _open_parent() -> str | None:
    # Prefect runs tasks in worker threads and MLflow's active run is per thread: fall back to the
    # most recent parent opened in this process so candidates still nest under it.
    active = mlflow.active_run()
    if active is not None:
        return active.info.run_id
    with _lock:
        return _state["parents"][-1] if _state["parents"] else None


@contextmanager
def candidate_run(name: str, params: dict | None = None, tags: dict | None = None) -> Iterator[str]:
    """A child run of the active parent for one candidate model."""
    parent = _open_parent()
    if parent is None:
        raise RuntimeError("candidate_run needs an open parent_run")
    exp_id = _reaching(lambda: _client().get_run(parent).info.experiment_id)()
    run = _start_run(
        experiment_id=exp_id,
        run_name=name,
        nested=True,
        parent_run_id=parent,
        tags=_str_tags({**(tags or {}), **_owner()}),
    )
    rid = run.info.run_id
    with _ending():
        if params:
            log_params(params)
        yield rid


def _current_run_id() -> str:
    rid = _open_parent()
    if rid is None:
        # mlflow.log_* would silently start a run in the Default experiment: refuse instead
        raise RuntimeError("no active run: log inside parent_run or candidate_run")
    return rid


def _str_tags(tags: dict | None) -> dict[str, str] | None:
    return {str(k): str(v) for k, v in tags.items()} if tags else None


@_reaching
def log_params(params: dict) -> None:
    if params:
        mlflow.log_params({str(k): v for k, v in params.items()}, run_id=_current_run_id())


@_reaching
def log_metrics(metrics: dict, step: int | None = None, model_id: str | None = None) -> None:
    """model_id: also link the metrics to that logged model of the run (the MLflow UI shows them on it)."""
    if metrics:
        mlflow.log_metrics(
            {str(k): float(v) for k, v in metrics.items()}, step=step, run_id=_current_run_id(), model_id=model_id
        )


@_reaching
def set_tags(tags: dict) -> None:
    rid = _current_run_id()
    client = _client()
    for k, v in (tags or {}).items():
        client.set_tag(rid, str(k), str(v))


@_reaching
def log_artifact(path, artifact_dir: str | None = None) -> None:
    _client().log_artifact(_current_run_id(), str(path), artifact_path=artifact_dir)


@_reaching
def log_figure(fig, artifact_file: str) -> None:
    _client().log_figure(_current_run_id(), fig, artifact_file)


@_reaching
def log_dict(d: dict, artifact_file: str) -> None:
    _client().log_dict(_current_run_id(), d, artifact_file)


@_reaching
def log_table(frame, artifact_file: str) -> None:
    """A table (pandas DataFrame) as a run artifact the MLflow UI shows as one (a `.json` artifact_file)."""
    _client().log_table(_current_run_id(), frame, artifact_file)


@_reaching
def read_table(run_id: str, artifact_file: str):
    """A table log_table() logged on run `run_id`, as a pandas DataFrame; None when the run holds none."""
    import json
    import tempfile

    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact_file, dst_path=tmp, tracking_uri=_state["uri"]
            )
        except Exception as e:  # noqa: BLE001 - no such artifact (an older run): the caller does without
            if _is_connection_error(e):
                raise
            return None
        with open(path) as f:
            d = json.load(f)
    return pd.DataFrame(d["data"], columns=d["columns"])
