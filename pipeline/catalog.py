"""Where every file of a dataset lives, and reading back what the stages wrote: the one place that
knows the layout under params.yaml `paths` (docs/architecture.md lists the files)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .config import Settings
from .errors import NotFoundError
from .files import utc_stamp


def filled_column(variable: str) -> str:
    """validated.parquet's column saying which cells of `variable` the gap policy filled (not observed)."""
    return f"filled:{variable}"


def raw_paths(name: str, settings: Settings) -> tuple[Path, Path]:
    d = Path(settings.paths.data) / name
    return d / "raw.parquet", d / "raw.json"


def validated_paths(name: str, settings: Settings) -> tuple[Path, Path]:
    d = Path(settings.paths.data) / name
    return d / "validated.parquet", d / "validated.json"


def future_path(name: str, settings: Settings) -> Path:
    """The rows after the last observation of a validated series: their known-future values (validate writes it)."""
    return Path(settings.paths.data) / name / "future.parquet"


def window_paths(name: str, settings: Settings) -> tuple[Path, Path]:
    d = Path(settings.paths.data) / name
    return d / "windows.npz", d / "windows.json"


def training_lock(name: str, settings: Settings) -> Path:
    """The lock one training run of dataset `name` holds (beside the checkpoints, outside data/)."""
    return Path(settings.paths.checkpoints).parent / "locks" / f"{name}.train.lock"


def quarantine_dir(name: str, settings: Settings) -> Path:
    """A new folder for one rejected input and its report."""
    d = Path(settings.paths.quarantine) / f"{name}-{utc_stamp()}"
    d.mkdir(parents=True, exist_ok=False)
    return d


def forecasts_dir(name: str, settings: Settings) -> Path:
    """Batch forecasts of a dataset, one Parquet file per run, named by its UTC stamp."""
    return Path(settings.paths.forecasts) / name


def monitoring_dir(name: str, settings: Settings) -> Path:
    """The monitor's files: points.parquet (the scored window), scores.parquet (one row per evaluation),
    state.json (the last evaluation, the last retrain trigger)."""
    return Path(settings.paths.reports) / name / "monitoring"


def read_raw(name: str, settings: Settings) -> tuple[pd.DataFrame, dict]:
    """The canonical frame and metadata written by ingest."""
    pq, js = raw_paths(name, settings)
    if not pq.is_file() or not js.is_file():
        raise NotFoundError(f"{pq}: dataset '{name}' is not ingested; run `cellcast ingest` first")
    return pd.read_parquet(pq), json.loads(js.read_text())


def read_validated(name: str, settings: Settings) -> tuple[pd.DataFrame, dict]:
    """The validated frame and its metadata (policy report, bounds, data_md5) written by validate."""
    pq, js = validated_paths(name, settings)
    if not pq.is_file() or not js.is_file():
        raise NotFoundError(f"{pq}: dataset '{name}' is not validated; run `cellcast validate {name}` first")
    return pd.read_parquet(pq), json.loads(js.read_text())
