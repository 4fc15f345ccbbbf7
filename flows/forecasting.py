"""The batch forecast flow: the registry's champion on the latest data of a series."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from cellcast.pipeline.config import Settings, check_dataset_name, settings_for_run

if TYPE_CHECKING:  # imported where it runs: the flow module stays light
    from cellcast.pipeline.serving.forecast import ForecastResult


@task(name="forecast", cache_policy=NO_CACHE, retries=0)
def forecast_task(settings: Settings, alias: str, device: str, future_file: str | None = None) -> ForecastResult:
    from cellcast.pipeline.serving.forecast import forecast_latest

    return forecast_latest(settings, alias=alias, device=device, future_file=future_file)


@flow(name="cellcast-forecast", log_prints=True)
def forecast_flow(
    name: str,
    settings: Settings | None = None,
    alias: str = "champion",
    device: str = "auto",
    refresh: bool = False,
    monitor: bool = True,
    future_file: str | None = None,
    overrides: dict | None = None,
) -> ForecastResult:
    """Forecast the next horizon of `name` with the model the registry calls `alias`.
    refresh: re-ingest and re-validate the source first (a scheduled run picks up new rows).
    monitor (with refresh): then score the champion's earlier forecasts on the new actuals, measure input
    drift, and start the retrain deployment when params.yaml `monitor` says so (flows/monitoring.py); with
    monitor.live_promotion, then decide the challenger against the champion on the live log.
    future_file: known-future values for the horizon (default: the rows after the last observation).
    settings: given by a caller in this process; a deployment gives none, and params.yaml is read when the run
    starts. overrides: params sections on top."""
    check_dataset_name(name)
    settings = settings_for_run(name, settings, overrides)
    if refresh:
        from cellcast.flows.data import ingest_task, validate_task, version_task

        ingest_task(settings)  # the file's latest contents, or the query's rows after the last one held
        validate_task(settings)
        version_task(settings, ["ingest", "validate"])  # the new rows: a new data version, kept like any
    res = forecast_task(settings, alias, device, future_file)
    steps = 0 if res.frame is None else len(res.frame)
    what = f"{res.panel.series} series" if res.panel is not None else f"{steps} steps"
    print(f"{name}: forecast of {what} from v{res.version} on {res.provider} -> {res.path}")
    if refresh and monitor and alias == "champion":  # a panel: per series, the verdict on their share
        from cellcast.flows.monitoring import monitoring_steps

        monitoring_steps(settings)
    if refresh and monitor and alias == "champion" and settings.monitor.live_promotion:
        from cellcast.flows.monitoring import live_promotion_task

        print(live_promotion_task(settings).line)  # the live log scores panels too
    return res
