"""The deployments of a dataset: `train-NAME` (trains weekly), `retrain-NAME` (no schedule: the runs the monitor
starts when the champion is due a retrain) and `forecast-NAME` (hourly, with refresh: new rows are ingested, the
forecast is made, the champion monitored, retrain-NAME started when due).

Each deployment carries the dataset's name and any explicit overrides (params sections), never a copy of
params.yaml: a run reads params.yaml when it starts, so an edit reaches the next scheduled run without a redeploy.

The fleet way (docs/operations.md), prefect.yaml in the project folder:

    .venv/bin/python -m cellcast.flows.deploy NAME --prefect-yaml    # add/update NAME's three entries in prefect.yaml
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    .venv/bin/prefect work-pool create cellcast --type process
    .venv/bin/prefect deploy --all                                   # in the project folder
    .venv/bin/prefect worker start --pool cellcast                   # runs them there

The same deployments straight from Python onto a work pool (what `make serve-stack` does):

    .venv/bin/python -m cellcast.flows.deploy NAME --work-pool cellcast

or embedded, served by this process until it is stopped (no work pool, no worker):

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python -m cellcast.flows.deploy NAME
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import prefect
import yaml
from prefect import serve

from cellcast.flows.forecasting import forecast_flow
from cellcast.flows.monitoring import retrain_deployment_name, train_deployment_name
from cellcast.flows.training import training_flow
from cellcast.pipeline.config import check_dataset_name, find_params, load_params
from cellcast.pipeline.errors import ConfigError

if TYPE_CHECKING:
    from prefect.deployments.runner import EntrypointType

PREFECT_YAML = "prefect.yaml"
# module paths: a worker imports the flows from the installed package, whatever folder it runs them in
TRAIN_ENTRYPOINT = "cellcast.flows.training:training_flow"
FORECAST_ENTRYPOINT = "cellcast.flows.forecasting:forecast_flow"
TRAIN_CRON, FORECAST_CRON = "0 3 * * 1", "5 * * * *"


def _parameters(dataset: str, overrides: dict | None = None) -> tuple[dict, dict]:
    """The training and forecast deployments' parameters: the name, the overrides (checked now, against
    params.yaml as it is; checked again by every run against params.yaml as it is then)."""
    check_dataset_name(dataset)
    load_params().for_dataset(dataset, overrides)
    over = {"overrides": overrides} if overrides else {}
    return {"name": dataset, **over}, {"name": dataset, "refresh": True, **over}


class _DeployOptions(TypedDict):
    """The Flow.deploy options the deployments share."""

    work_pool_name: str
    job_variables: dict[str, Any]
    entrypoint_type: EntrypointType
    build: bool
    push: bool
    print_next_steps: bool
    ignore_warnings: bool


def _forecast_schedule(forecast_cron: str | None, forecast_every: float | None) -> dict:
    if forecast_every:
        return {"interval": forecast_every}
    return {"cron": forecast_cron}


def deployments(
    dataset: str,
    train_cron: str,
    forecast_cron: str | None,
    forecast_every: float | None = None,
    overrides: dict | None = None,
):
    """The three deployments, to be served by this process (`prefect.serve`)."""
    train, fc = _parameters(dataset, overrides)
    return [
        training_flow.to_deployment(name=train_deployment_name(dataset), cron=train_cron, parameters=train),
        training_flow.to_deployment(name=retrain_deployment_name(dataset), parameters=train),
        forecast_flow.to_deployment(
            name=f"forecast-{dataset}", parameters=fc, **_forecast_schedule(forecast_cron, forecast_every)
        ),
    ]


def deploy_to_pool(
    dataset: str,
    work_pool: str,
    train_cron: str,
    forecast_cron: str | None,
    forecast_every: float | None = None,
    project: Path | None = None,
    forecast_paused: bool = False,
    overrides: dict | None = None,
) -> list:
    """Create (or update) the three deployments on `work_pool` (a process pool): a worker started anywhere
    this package is installed runs them in `project` (default: the folder holding params.yaml), where
    params.yaml and its relative paths and the embedded MLflow store live. forecast_paused: its schedule waits
    (no champion to forecast with yet). Returns the deployment ids."""
    from prefect.deployments.runner import EntrypointType

    train, fc = _parameters(dataset, overrides)
    project = Path(project or find_params().parent).resolve()
    common: _DeployOptions = {
        "work_pool_name": work_pool,
        "job_variables": {"working_dir": str(project)},
        # the flows are imported from the installed package: no image, no code storage to pull
        "entrypoint_type": EntrypointType.MODULE_PATH,
        "build": False,
        "push": False,
        "print_next_steps": False,
        "ignore_warnings": True,
    }
    return [
        training_flow.deploy(
            train_deployment_name(dataset), cron=train_cron, parameters=train, concurrency_limit=1, **common
        ),
        training_flow.deploy(retrain_deployment_name(dataset), parameters=train, concurrency_limit=1, **common),
        # one refresh at a time: two would score and trigger on the same evaluation
        forecast_flow.deploy(
            f"forecast-{dataset}",
            parameters=fc,
            concurrency_limit=1,
            paused=forecast_paused,
            **_forecast_schedule(forecast_cron, forecast_every),
            **common,
        ),
    ]


# ---------------------------------------------------------------- prefect.yaml


def yaml_entries(
    dataset: str,
    work_pool: str = "cellcast",
    train_cron: str = TRAIN_CRON,
    forecast_cron: str | None = FORECAST_CRON,
    forecast_every: float | None = None,
    overrides: dict | None = None,
) -> list[dict]:
    """The three `deployments:` entries of dataset `dataset` for prefect.yaml."""
    train, fc = _parameters(dataset, overrides)
    pool = {"name": work_pool}
    forecast_schedule = {"interval": forecast_every} if forecast_every else {"cron": forecast_cron}
    return [
        {
            "name": train_deployment_name(dataset),
            "description": f"Train {dataset} on its schedule (params.yaml read when the run starts)",
            "entrypoint": TRAIN_ENTRYPOINT,
            "parameters": train,
            "work_pool": pool,
            "concurrency_limit": 1,
            "schedules": [{"cron": train_cron}],
        },
        {
            "name": retrain_deployment_name(dataset),
            "description": f"Retrain {dataset} when the monitor says it is due (started by forecast-{dataset})",
            "entrypoint": TRAIN_ENTRYPOINT,
            "parameters": train,
            "work_pool": pool,
            "concurrency_limit": 1,
            "schedules": [],
        },
        {
            "name": f"forecast-{dataset}",
            "description": f"Refresh {dataset}, forecast with the champion, monitor it, start a retrain when due",
            "entrypoint": FORECAST_ENTRYPOINT,
            "parameters": fc,
            "work_pool": pool,
            "concurrency_limit": 1,
            "schedules": [forecast_schedule],
        },
    ]


_HEADER = """\
# Prefect deployments of this project: `prefect deploy --all` (in this folder, PREFECT_API_URL set) creates or
# updates them; `prefect worker start --pool POOL` (in this folder) runs them. docs/operations.md.
# Each deployment carries the dataset's name and any explicit `overrides` (params sections): a run reads
# params.yaml when it starts, so an edit of params.yaml reaches the next run without a redeploy.
# `python -m cellcast.flows.deploy NAME --prefect-yaml` adds or updates a dataset's three entries, keeping the rest.
# No `pull:` section: `prefect deploy` records the folder it ran in, and the worker runs the flows there.
"""


class _NoAliases(yaml.SafeDumper):
    """Each entry spelled out (no &id anchors): a person edits one without touching the others."""

    def ignore_aliases(self, data) -> bool:
        return True


def write_prefect_yaml(path: Path, entries: list[dict]) -> Path:
    """Add `entries` to the prefect.yaml at `path` (made if absent), replacing those of the same name and
    keeping every other deployment and section."""
    path = Path(path)
    doc: dict = {}
    if path.is_file():
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: must be a mapping (name, deployments, ...), got {type(doc).__name__}")
    doc.setdefault("name", path.resolve().parent.name)
    doc.setdefault("prefect-version", prefect.__version__)
    old = doc.get("deployments") or []
    if not isinstance(old, list):
        raise ConfigError(f"{path}: deployments: must be a list, got {type(old).__name__}")
    names = [e["name"] for e in entries]
    kept = [d for d in old if not (isinstance(d, dict) and d.get("name") in names)]
    doc["deployments"] = kept + copy.deepcopy(entries)
    body = yaml.dump(doc, Dumper=_NoAliases, sort_keys=False, default_flow_style=False, width=120)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(_HEADER + body)
    tmp.replace(path)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", nargs="?", default=None)
    p.add_argument("--train-cron", default=TRAIN_CRON, help="train (default: Mondays 03:00)")
    p.add_argument("--forecast-cron", default=FORECAST_CRON, help="forecast (default: hourly at :05)")
    p.add_argument(
        "--forecast-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="forecast at this interval instead of the cron",
    )
    p.add_argument(
        "--overrides",
        default=None,
        metavar="JSON",
        help='params sections the deployments apply on top of params.yaml, e.g. \'{"train": {"epochs": 20}}\'',
    )
    p.add_argument(
        "--prefect-yaml",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="write the dataset's deployments into this prefect.yaml (default: the one beside params.yaml) for "
        "`prefect deploy --all`, keeping its other deployments; nothing is deployed",
    )
    p.add_argument(
        "--work-pool",
        default=None,
        help="create the deployments on this process work pool (a worker runs them) instead of serving them; "
        "with --prefect-yaml: the pool the entries name (default: cellcast)",
    )
    p.add_argument(
        "--project",
        default=None,
        help="with --work-pool: the folder the worker runs the flows in (default: the one holding params.yaml)",
    )
    p.add_argument(
        "--forecast-paused",
        action="store_true",
        help="with --work-pool: the forecast schedule paused (deploy again without it to resume)",
    )
    a = p.parse_args(argv)
    try:
        overrides = json.loads(a.overrides) if a.overrides else None
    except json.JSONDecodeError as e:
        raise SystemExit(f"--overrides: not valid JSON ({e})") from None
    try:
        dataset = a.dataset or load_params().dataset
        if a.prefect_yaml is not None:
            entries = yaml_entries(
                dataset, a.work_pool or "cellcast", a.train_cron, a.forecast_cron, a.forecast_every, overrides
            )
            path = write_prefect_yaml(Path(a.prefect_yaml or find_params().parent / PREFECT_YAML), entries)
            print(f"{path}: deployments {', '.join(e['name'] for e in entries)} (now `prefect deploy --all`)")
            return
        if a.work_pool:
            ids = deploy_to_pool(
                dataset,
                a.work_pool,
                a.train_cron,
                a.forecast_cron,
                a.forecast_every,
                a.project,
                a.forecast_paused,
                overrides,
            )
            print(
                f"deployments train-{dataset}, retrain-{dataset}, forecast-{dataset} on work pool '{a.work_pool}': "
                f"{', '.join(map(str, ids))}"
            )
            return
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    serve(*deployments(dataset, a.train_cron, a.forecast_cron, a.forecast_every, overrides))


if __name__ == "__main__":
    main()
