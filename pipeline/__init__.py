"""cellcast's library (installed as `cellcast.pipeline`): every step as plain functions on plain data.

Layers, each importing only those below it (tests/test_layers.py keeps this true):

    serving     forecast (batch), service (HTTP), launch,      registered models in use
                models, context, routes_health, routes_models,
                routes_forecast, predict, canary, openapi,
                requests, timestamps, problems, swap, livelog,
                metrics
    monitoring  scoring, verdict, evaluate, status, champion,  is the champion still good
                report, state, panel, live, promote
    registry    tracking (MLflow), promotion, assessment,      what is registered and promoted
                metadata, lineage, champion, decision,
                references, promotion_run, run_logs, pictures,
                summary, results, backtest, report
    engine      onnx_export, inference (ONNX Runtime), doctor  the deployable artefact and what runs it
    modeling    model, train, anchor, evaluate, quantiles,     the forecaster, trained and scored
                classical, plots, device, panel_eval,
                panel_references, local
    data        datasets, readers, dates, frequency, ingest,   data in
                panel, resample, schedule, database,
                validation, expectations, cleaning, findings,
                panel_validation, window, splits, windowset,
                panel_windows, seasonal, folds, calendar,
                drift, versioning
    core        config, errors, catalog, files (this folder)

docs/architecture.md has every module and its one job.

No Prefect and no CLI in here: flows/ and cellcast/ import this package, never the reverse.
"""

import os

__version__ = "0.1.0"

# OpenMP threads that spin while waiting made a 2-thread LSTM step up to 80x slower on a 2-core machine
# shared with the Prefect and MLflow servers (bench/README.md). Passive waiting costs little when the
# machine is quiet. Set before torch is imported; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
