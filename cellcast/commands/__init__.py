"""The commands of `cellcast`, by area (data, training, registry, serving, system); each module's `register(app)`
adds its commands. What they share: the settings of a dataset, the project root, the device option."""

from __future__ import annotations

from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")


def settings_for(name: str | None = None):
    """The settings of dataset `name` (default: params.yaml `dataset`) from the project's params.yaml."""
    from cellcast.pipeline.config import load_params

    return load_params().for_dataset(name)


def project_root() -> Path:
    """The folder holding params.yaml: where the embedded MLflow store lives."""
    from cellcast.pipeline.config import find_params

    return find_params().parent


def configure_tracking(settings=None):
    """MLflow pointed at $MLFLOW_TRACKING_URI or the project's embedded store, with params.yaml's retry budget."""
    from cellcast.pipeline.registry import tracking

    settings = settings or settings_for()
    return tracking.configure(project_root(), registry=settings.registry)


def check_device(device: str | None) -> None:
    from cellcast.pipeline.errors import ConfigError

    if device is not None and device not in DEVICES:
        raise ConfigError(f"--device '{device}': not one of {', '.join(DEVICES)}")
