"""cellcast's library (installed as `cellcast.pipeline`): every step as plain functions on plain data.

Layers, each importing only those below it (tests/test_layers.py keeps this true):

    serving    forecast (batch), service (HTTP)              registered models in use
    registry   tracking (MLflow), promotion, lifecycle, report   what is registered and promoted
    engine     onnx_export, inference (ONNX Runtime)          the deployable artefact and what runs it
    modeling   model, train, evaluate, plots                  the forecaster, trained and scored
    data       datasets, ingest, validation, window, versioning   data in
    core       config, errors (this folder)

No Prefect and no CLI in here: flows/ and cellcast/ import this package, never the reverse.
"""

import os

__version__ = "0.1.0"

# OpenMP threads that spin while waiting made a 2-thread LSTM step up to 80x slower on a 2-core machine
# shared with the Prefect and MLflow servers (bench/README.md). Passive waiting costs little when the
# machine is quiet. Set before torch is imported; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
