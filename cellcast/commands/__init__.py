"""The commands of `cellcast`, by area (data, training, registry, serving, system); each module's `register(app)`
adds its commands. What they share: the settings of a dataset, the project root, the device option, and `friendly`,
which turns a user error into one line on stderr and its exit code."""

from __future__ import annotations

import functools
from pathlib import Path

import typer

from cellcast.pipeline.errors import CellcastError
from cellcast.stopping import exit_code, stop_of, stopped_line

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


def friendly(fn):
    """Print a CellcastError as one line on stderr and exit with its code, no traceback. A stop (SIGTERM, SIGHUP:
    cellcast/stopping.py; SIGINT) likewise: one line, exit 128 + the signal's number, once the command unwound."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BaseException as e:
            signum = stop_of(e)
            if signum is not None:  # first: an error raised while a stop unwound is the stop's
                try:
                    typer.secho(stopped_line(signum, fn.__name__.replace("_", " ")), fg=typer.colors.YELLOW, err=True)
                except OSError:  # SIGHUP: the terminal may be gone
                    pass
                raise typer.Exit(exit_code(signum)) from None
            if isinstance(e, CellcastError):
                typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
                raise typer.Exit(e.exit_code) from None  # the line above is the whole message
            raise

    return wrapper
