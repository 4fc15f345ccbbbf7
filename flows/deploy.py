"""Scheduled deployments: retrain weekly and forecast hourly, served by a long-running process.

    .venv/bin/prefect server start --host 127.0.0.1        # schedules need a real server
    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python -m cellcast.flows.deploy [DATASET]

Cron strings and the dataset come from the command line; everything else from params.yaml.
"""
from __future__ import annotations

import argparse

from prefect import serve

from cellcast.flows.forecasting import forecast_flow
from cellcast.flows.training import training_flow
from cellcast.pipeline.config import load_params


def deployments(dataset: str, train_cron: str, forecast_cron: str):
    settings = load_params().for_dataset(dataset)
    return [
        training_flow.to_deployment(name=f"train-{dataset}", cron=train_cron,
                                    parameters={"name": dataset, "settings": settings.model_dump(mode="json", by_alias=True)}),
        forecast_flow.to_deployment(name=f"forecast-{dataset}", cron=forecast_cron,
                                    parameters={"name": dataset, "settings": settings.model_dump(mode="json", by_alias=True),
                                                "refresh": True}),
    ]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", nargs="?", default=None)
    p.add_argument("--train-cron", default="0 3 * * 1", help="retrain (default: Mondays 03:00)")
    p.add_argument("--forecast-cron", default="5 * * * *", help="forecast (default: hourly at :05)")
    a = p.parse_args(argv)
    dataset = a.dataset or load_params().dataset
    serve(*deployments(dataset, a.train_cron, a.forecast_cron))


if __name__ == "__main__":
    main()
