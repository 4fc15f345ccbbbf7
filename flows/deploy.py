"""Scheduled deployments of a dataset: retrain weekly (`train-NAME`) and forecast hourly (`forecast-NAME`, with
refresh: new rows are ingested, the forecast is made, the champion monitored, a retrain started when due).

On a work pool, run by a worker (what `make serve-stack` does; docs/operations.md):

    .venv/bin/prefect server start --host 127.0.0.1                    # schedules need a real server
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    .venv/bin/prefect work-pool create cellcast --type process
    .venv/bin/python -m cellcast.flows.deploy elecdemand --work-pool cellcast
    .venv/bin/prefect worker start --pool cellcast                      # in the project folder

or without a worker, served by this process until it is stopped:

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python -m cellcast.flows.deploy elecdemand

Schedules and the dataset come from the command line; everything else from params.yaml, whose settings
travel as the deployments' parameters.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from prefect import serve

from cellcast.flows.forecasting import forecast_flow
from cellcast.flows.monitoring import train_deployment_name
from cellcast.flows.training import training_flow
from cellcast.pipeline.config import find_params, load_params

if TYPE_CHECKING:
    from prefect.deployments.runner import EntrypointType


def _parameters(dataset: str) -> tuple[dict, dict]:
    settings = load_params().for_dataset(dataset).model_dump(mode="json", by_alias=True)
    return {"name": dataset, "settings": settings}, {"name": dataset, "settings": settings, "refresh": True}


class _DeployOptions(TypedDict):
    """The Flow.deploy options both deployments share."""

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


def deployments(dataset: str, train_cron: str, forecast_cron: str | None, forecast_every: float | None = None):
    """The two deployments, to be served by this process (`prefect.serve`)."""
    train, fc = _parameters(dataset)
    return [
        training_flow.to_deployment(name=train_deployment_name(dataset), cron=train_cron, parameters=train),
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
) -> list:
    """Create (or update) the two deployments on `work_pool` (a process pool): a worker started anywhere
    this package is installed runs them in `project` (default: the folder holding params.yaml), where
    params.yaml's relative paths and the embedded MLflow store live. forecast_paused: its schedule waits
    (no champion to forecast with yet). Returns the deployment ids."""
    from prefect.deployments.runner import EntrypointType

    train, fc = _parameters(dataset)
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", nargs="?", default=None)
    p.add_argument("--train-cron", default="0 3 * * 1", help="retrain (default: Mondays 03:00)")
    p.add_argument("--forecast-cron", default="5 * * * *", help="forecast (default: hourly at :05)")
    p.add_argument(
        "--forecast-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="forecast at this interval instead of the cron",
    )
    p.add_argument(
        "--work-pool",
        default=None,
        help="create the deployments on this process work pool (a worker runs them) instead of serving them",
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
    dataset = a.dataset or load_params().dataset
    if a.work_pool:
        ids = deploy_to_pool(
            dataset, a.work_pool, a.train_cron, a.forecast_cron, a.forecast_every, a.project, a.forecast_paused
        )
        print(
            f"deployments train-{dataset}, forecast-{dataset} on work pool '{a.work_pool}': {', '.join(map(str, ids))}"
        )
        return
    serve(*deployments(dataset, a.train_cron, a.forecast_cron, a.forecast_every))


if __name__ == "__main__":
    main()
