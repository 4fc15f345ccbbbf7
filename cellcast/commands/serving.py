"""`cellcast serve NAME` (the forecasting service) and `cellcast forecast NAME` (a batch forecast)."""

from __future__ import annotations

import logging

import typer

from cellcast.commands import check_device, configure_tracking, friendly, project_root, settings_for
from cellcast.stopping import hangup_as_terminate


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(forecast)


@friendly
def serve(
    names: list[str] | None = typer.Argument(
        None, help="dataset name(s); serves each <name>-forecaster@ALIAS", metavar="NAME"
    ),
    every: bool = typer.Option(
        False, "--all", help="every dataset of params.yaml and sources.yaml with a model under ALIAS"
    ),
    host: str | None = typer.Option(None, help="bind address (default: serve.host, 127.0.0.1)"),
    port: int | None = typer.Option(None, help="port (default: serve.port)"),
    alias: str = typer.Option("champion", help="registry alias to follow"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    require_gpu: bool = typer.Option(False, "--require-gpu", help="fail instead of falling back to the CPU"),
    token: str | None = typer.Option(
        None, envvar="CELLCAST_API_TOKEN", show_envvar=True, help="require 'Authorization: Bearer TOKEN'"
    ),
    poll_seconds: float | None = typer.Option(
        None, help="how often the alias is checked (default: serve.poll_seconds)"
    ),
    threads: int | None = typer.Option(None, help="ONNX Runtime intra-op threads (default: all cores)"),
    cpu_batch_threshold: int | None = typer.Option(
        None, help="on a GPU: batches below this run on the CPU (default: measured at load)"
    ),
    workers: int | None = typer.Option(
        None, min=1, help="processes behind the port, each following the alias (default: serve.workers)"
    ),
) -> None:
    """Serve forecasts over HTTP, each model following its alias: POST /v1/models/NAME/forecast, GET /v1/models
    (and with one model POST /v1/forecast, GET /model), GET /health, GET /metrics. SIGTERM / Ctrl-C: requests in
    flight are answered, then it exits."""
    from cellcast.pipeline.errors import ConfigError
    from cellcast.pipeline.serving.launch import serve as run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_device(device)
    if every == bool(names):
        raise ConfigError("serve: name one or more datasets, or --all (not both)")
    if len(set(names or ())) != len(names or ()):
        raise ConfigError(f"serve: a dataset named twice ({', '.join(names or ())})")
    configure_tracking(settings_for(names[0] if names else None))
    datasets = names or served_datasets(alias)
    with hangup_as_terminate():  # SIGHUP: the same graceful shutdown as SIGTERM
        run(
            [settings_for(n) for n in datasets],
            host=host,
            port=port,
            alias=alias,
            device=device,
            token=token,
            poll_seconds=poll_seconds,
            threads=threads,
            cpu_batch_threshold=cpu_batch_threshold,
            require_gpu=require_gpu,
            workers=workers,
        )


def served_datasets(alias: str) -> list[str]:
    """--all: the datasets of params.yaml (its default and `datasets:`) and of sources.yaml whose model has a
    version under `alias` in the registry."""
    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.data.versioning import pipeline_root, read_sources
    from cellcast.pipeline.errors import NotFoundError
    from cellcast.pipeline.registry import tracking

    params = load_params()
    root = pipeline_root(project_root())
    candidates = dict.fromkeys([params.dataset, *params.datasets, *(read_sources(root) if root else {})])
    found = [n for n in candidates if tracking.get_alias(params.for_dataset(n).model_name, alias) is not None]
    if not found:
        raise NotFoundError(
            f"serve --all: none of {len(candidates)} datasets ({', '.join(list(candidates)[:10])}) has a "
            f"model under '{alias}' in the registry: train one with `cellcast train NAME`"
        )
    typer.echo(f"serving {len(found)} of {len(candidates)} datasets: {', '.join(found)}")
    return found


@friendly
def forecast(
    name: str = typer.Argument(..., help="dataset name"),
    alias: str = typer.Option("champion", help="registry alias (or a version number)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    future: str | None = typer.Option(
        None,
        "--future",
        help="CSV/Parquet of known-future values (a `timestamp` column and the columns the model "
        "reads ahead) for the horizon; default: the rows after the last observation",
    ),
) -> None:
    """Forecast the steps after the latest validated observation -> forecasts/NAME/<stamp>.parquet."""
    from cellcast.pipeline.serving.forecast import forecast_latest

    settings = settings_for(name)
    configure_tracking(settings)
    check_device(device)
    res = forecast_latest(settings, alias=alias, device=device, future_file=future)
    if res.panel is not None:  # a panel: every series, one long file
        pf = res.panel
        typer.echo(
            f"{settings.model_name} v{res.version} ({alias}) on {res.provider}: {pf.series} "
            f"series ({pf.cold_start} cold start) x {pf.rows // max(pf.series, 1)} steps, {pf.first} .. {pf.last}"
        )
        for sid, why in pf.skipped.items():
            typer.echo(f"not forecast: series '{sid}': {why}")
    elif res.frame is not None:
        f = res.frame
        typer.echo(
            f"{settings.model_name} v{res.version} ({alias}) on {res.provider}: {len(f)} steps "
            f"{f['timestamp'].iloc[0]} .. {f['timestamp'].iloc[-1]}"
        )
    typer.echo(f"written: {res.path}")
