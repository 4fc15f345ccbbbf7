"""The backtest flow: data -> folds -> each fold (train or recalibrate, score) -> picture -> track in MLflow.
Thin: the work is pipeline/registry/backtest.py's."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cellcast.flows.data import data_steps
from cellcast.pipeline.catalog import training_lock
from cellcast.pipeline.config import Settings, settings_for_run
from cellcast.pipeline.data.folds import Fold
from cellcast.pipeline.data.window import load_windows
from cellcast.pipeline.files import exclusive
from cellcast.pipeline.modeling import plots
from cellcast.pipeline.modeling.train import TrainResult, cpu_threads, pick_device, torch_threads
from cellcast.pipeline.registry import backtest as bt
from cellcast.pipeline.registry import tracking


@task(name="backtest-fold", cache_policy=NO_CACHE, retries=0, task_run_name="fold-{fold.index}")
def fold_task(
    ws, fold, settings: Settings, refit: str, first, device: str
) -> tuple[bt.FoldRecord, tuple[Fold, list[TrainResult]]]:
    logger = get_run_logger()

    def on_epoch(name, row):
        logger.info(
            "fold %d %s epoch %d: train %.4f  val %.4f",
            fold.index,
            name,
            row["epoch"],
            row["train_loss"],
            row["val_loss"],
        )

    rec, first = bt.run_fold(ws, fold, settings, refit, first, device, on_epoch)
    logger.info(
        "fold %d (test %s .. %s, %d origins): %s; bar %s %.3f; selected %s",
        fold.index,
        *rec.times["test"],
        rec.origins,
        ", ".join(f"{k} {v['mase']:.3f}" for k, v in rec.scores.items() if "mase" in v and k != "selected"),
        rec.bar,
        rec.scores[rec.bar]["mase"],
        rec.selected,
    )
    return rec, first


def backtest_steps(
    ws,
    settings: Settings,
    folds: int | None = None,
    refit: str | None = None,
    end: int | None = None,
    device: str = "cpu",
):
    """Every fold in order, each a task; returns the BacktestResult (not yet tracked). Called by the backtest flow
    and by the training flow (evaluate.selection: backtest, with `end` the main split's first test row)."""
    import time

    t0 = time.perf_counter()
    refit = refit or settings.backtest.refit
    records, first = [], None
    with torch_threads(cpu_threads(settings, device, at_once=1)):  # a fold's candidates: one after another
        for fold in bt.plan(ws, settings, folds, end):
            rec, first = fold_task(ws, fold, settings, refit, first, device)
            records.append(rec)
    return bt.finish(ws, records, refit, records[-1].fold.test_end, time.perf_counter() - t0)


@task(name="track-backtest", cache_policy=NO_CACHE, retries=0)
def track_task(result, ws, settings: Settings) -> bt.BacktestResult:
    fig = bt.picture(result, [c for c in result.folds[0].val_mase])
    try:
        bt.write_report(result, settings, fig)
        bt.track(result, ws, settings, fig)
        bt.write_report(result, settings)  # again, with the parent run's id
    finally:
        plots.close(fig)
    return result


@flow(name="cellcast-backtest", log_prints=True)
def backtest_flow(
    name: str,
    settings: Settings,
    source: dict | None = None,
    from_windows: bool = False,
    folds: int | None = None,
    refit: str | None = None,
    device: str | None = None,
) -> bt.BacktestResult:
    """Rolling-origin evaluation of the candidates of params.yaml on dataset `name` (docs/forecasting.md)."""
    settings = settings_for_run(name, settings)  # made for `name`: refused (one line) when made for another dataset
    logger = get_run_logger()
    tracking.configure(registry=settings.registry)
    tracking.check_reachable()
    # the training lock: a training of the same dataset rewrites data/NAME/ (ingest, validate, window) as this reads it
    lock = training_lock(settings)
    with exclusive(
        lock,
        waiting=lambda who: logger.warning("%s is being trained by %s: waiting for it to finish (%s)", name, who, lock),
    ):
        ws = load_windows(settings) if from_windows else data_steps(settings, source)
    dev = str(pick_device(device or settings.train.device))
    result = backtest_steps(ws, settings, folds, refit, device=dev)
    result = track_task(result, ws, settings)
    print(bt.summary(result))
    return result
