"""`cellcast window`, `train`, `evaluate`, `run`: from a validated series to a registered champion."""

from __future__ import annotations

import json

import typer

from cellcast.commands import check_device, configure_tracking, friendly, settings_for
from cellcast.pipeline.data.ingest import source_of


def check_known(settings) -> None:
    from cellcast.pipeline.catalog import raw_paths
    from cellcast.pipeline.data.datasets import list_datasets
    from cellcast.pipeline.errors import NotFoundError

    name = settings.dataset
    if raw_paths(settings)[1].is_file() or name in {d.name for d in list_datasets()}:
        return
    raise NotFoundError(
        f"dataset '{name}': neither ingested (data/{name}/raw.json) nor bundled "
        f"({', '.join(d.name for d in list_datasets())}); ingest it with `cellcast ingest`"
    )


def register(app: typer.Typer) -> None:
    app.command()(window)
    app.command()(train)
    app.command()(backtest)
    app.command()(evaluate)
    app.command()(run)


@friendly
def window(name: str = typer.Argument(..., help="dataset name")) -> None:
    """Cut a validated dataset into chronological train / validation / test windows (data/NAME/windows.*)."""
    from cellcast.commands.data import _record
    from cellcast.pipeline.data.panel_windows import PanelWindowSet
    from cellcast.pipeline.data.window import window_dataset

    ws = window_dataset(settings_for(name))
    note = _record(name, ["window"])
    if note:
        typer.echo(note, err=True)
    m = ws.meta
    if isinstance(ws, PanelWindowSet):
        cold = sum(1 for v in m.panel["status"].values() if v.startswith("cold_start"))
        typer.echo(
            f"{name}: a panel of {len(ws.series_ids)} series ({cold} cold start) in one array of {m.rows} "
            f"rows -> windows train {m.counts['train']}, val {m.counts['val']}, test {m.counts['test']}, "
            f"cold start {m.counts.get('cold', 0)} (lookback {m.lookback}, horizon {m.horizon}, stride "
            f"{m.stride}); each series scaled on its own training rows"
            + (f"; known-future inputs: {', '.join(m.future_names)}" if m.future_names else "")
        )
        return
    typer.echo(
        f"{name}: {m.rows} rows -> windows train {m.counts['train']}, val {m.counts['val']}, "
        f"test {m.counts['test']} (lookback {m.lookback}, horizon {m.horizon}, stride {m.stride}); "
        f"scaler fitted on {m.split_times['train'][0]} .. {m.split_times['train'][1]}"
        + (f"; known-future inputs: {', '.join(m.future_names)}" if m.future_names else "")
    )


@friendly
def train(
    name: str = typer.Argument(..., help="dataset name (bundled or ingested)"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda (default: params.yaml train.device)"),
    from_windows: bool = typer.Option(
        False, "--from-windows", help="start from data/NAME/windows.* (the DVC stage) instead of re-ingesting"
    ),
) -> None:
    """Run the training flow: ingest -> validate -> window -> train candidates -> evaluate -> register
    -> promote."""
    from cellcast.flows.training import run_training

    settings = settings_for(name)
    check_device(device)
    if not from_windows:
        check_known(settings)
    configure_tracking(settings)
    run_training(
        settings,
        source=None if from_windows else source_of(settings),
        from_windows=from_windows,
        device=device,
    )
    _print_ui_hint()


@friendly
def backtest(
    name: str = typer.Argument(..., help="dataset name (bundled or ingested)"),
    folds: int | None = typer.Option(
        None, "--folds", min=1, help="expanding-window folds (default: params.yaml backtest.folds)"
    ),
    refit: str | None = typer.Option(
        None, "--refit", help="retrain | calibration (default: params.yaml backtest.refit)"
    ),
    device: str | None = typer.Option(None, help="auto | cpu | cuda (default: params.yaml train.device)"),
    from_windows: bool = typer.Option(
        False, "--from-windows", help="start from data/NAME/windows.* instead of re-ingesting"
    ),
) -> None:
    """Rolling-origin evaluation: K expanding-window folds, each trained (or recalibrated) and scored on its own
    test block; one MLflow parent run with a child per fold, reports/NAME/backtest.json and backtest.png."""
    from cellcast.flows.backtest import backtest_flow
    from cellcast.pipeline.errors import ConfigError

    settings = settings_for(name)
    check_device(device)
    if refit is not None and refit not in ("retrain", "calibration"):
        raise ConfigError(f"--refit '{refit}': not one of retrain, calibration")
    if not from_windows:
        check_known(settings)
    configure_tracking(settings)
    result = backtest_flow(
        name,
        settings,
        source=None if from_windows else source_of(settings),
        from_windows=from_windows,
        folds=folds,
        refit=refit,
        device=device,
    )
    typer.echo(f"\nreport: {result.picture}  (and backtest.json beside it); MLflow run {result.parent_run_id}")
    _print_ui_hint()


@friendly
def evaluate(
    name: str = typer.Argument(..., help="dataset name"),
    alias: str = typer.Option("champion", help="registry alias (or version number) to evaluate"),
) -> None:
    """Score a registered model on the test split against the baselines: writes reports/NAME/metrics.json and
    plot data (for `dvc metrics show` / `dvc plots show`)."""
    from cellcast.pipeline.registry.report import evaluate_registered

    settings = settings_for(name)
    configure_tracking(settings)
    out = evaluate_registered(settings, alias)
    typer.echo(json.dumps(out["metrics"], indent=2))


@friendly
def run(
    name: str | None = typer.Argument(None, help="dataset (default: params.yaml `dataset`)"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda"),
) -> None:
    """The main job: a bundled real dataset all the way to a registered champion and an ONNX forecast."""
    from cellcast.flows.training import run_training

    check_device(device)
    settings = settings_for(name)
    name = settings.dataset
    check_known(settings)
    configure_tracking(settings)
    outcome = run_training(settings, source=source_of(settings), device=device)
    if outcome.champion_after:
        from cellcast.flows.forecasting import forecast_flow

        res = forecast_flow(name, settings)
        typer.echo(f"\nforecast from champion v{res.version} ({res.provider}): {res.path}")
        if res.frame is not None:  # a panel's forecast is in the file only (the flow printed its series' count)
            typer.echo(res.frame.to_string(max_rows=12))
    else:
        typer.echo(f"\nno champion for {settings.model_name}: no forecast written")
    _print_ui_hint()


def _print_ui_hint() -> None:
    """Where to look at the runs: the store this command used (not a fresh default one)."""
    typer.echo("\n" + ui_hint())


def ui_hint() -> str:
    import shlex

    from cellcast.commands.registry import ui_command
    from cellcast.pipeline.registry import tracking

    server = tracking.server_url()
    if server is not None:
        return f"MLflow UI: {server}   (the tracking server in MLFLOW_TRACKING_URI)"
    uri = tracking.tracking_uri()
    if uri.startswith("sqlite"):
        return f"MLflow UI: {shlex.join(ui_command(uri))}   (or `cellcast ui --start`)"
    return f"MLflow: {uri}"
