"""Where every file of a dataset lives, and reading back what the stages wrote: the one place that
knows the layout under params.yaml `paths` (docs/architecture.md lists the files)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .config import Settings, check_dataset_name
from .errors import ConfigError, NotFoundError
from .files import utc_stamp


def filled_column(variable: str) -> str:
    """validated.parquet's column saying which cells of `variable` the gap policy filled (not observed)."""
    return f"filled:{variable}"


def dataset_dir(settings: Settings) -> Path:
    """data/NAME (NAME: settings.dataset): every path of a dataset is built from its name here, after the one
    naming rule (config.py)."""
    return Path(settings.paths.data) / check_dataset_name(settings.dataset)


def raw_paths(settings: Settings) -> tuple[Path, Path]:
    d = dataset_dir(settings)
    return d / "raw.parquet", d / "raw.json"


def validated_paths(settings: Settings) -> tuple[Path, Path]:
    d = dataset_dir(settings)
    return d / "validated.parquet", d / "validated.json"


def policy_path(settings: Settings) -> Path:
    """The validation policy given on the command line for NAME (`cellcast validate --long-gaps ...`), kept so later
    runs of the dataset (train, a scheduled refresh, a forecast) validate it the same way."""
    return dataset_dir(settings) / "policy.json"


def future_path(settings: Settings) -> Path:
    """The rows after the last observation of a validated series: their known-future values (validate writes it)."""
    return dataset_dir(settings) / "future.parquet"


def window_paths(settings: Settings) -> tuple[Path, Path]:
    d = dataset_dir(settings)
    return d / "windows.npz", d / "windows.json"


def training_lock(settings: Settings) -> Path:
    """The lock one training run of the dataset holds (beside the checkpoints, outside data/)."""
    return Path(settings.paths.checkpoints).parent / "locks" / f"{check_dataset_name(settings.dataset)}.train.lock"


def quarantine_dir(settings: Settings) -> Path:
    """A new folder for one rejected input and its report."""
    d = Path(settings.paths.quarantine) / f"{check_dataset_name(settings.dataset)}-{utc_stamp()}"
    d.mkdir(parents=True, exist_ok=False)
    return d


def quarantined_files(folder: Path) -> tuple[Path, Path, Path]:
    """(data.parquet, meta.json, report.json) of a quarantine folder: the rejected rows, their metadata and why
    they were rejected."""
    return folder / "data.parquet", folder / "meta.json", folder / "report.json"


def forecasts_dir(settings: Settings) -> Path:
    """Batch forecasts of a dataset, one Parquet file per run, named by its UTC stamp."""
    return Path(settings.paths.forecasts) / check_dataset_name(settings.dataset)


def live_dir(settings: Settings) -> Path:
    """The service's live forecast log of a dataset: one Parquet file per flush of its writer, one row per
    (request, series, step) and version answering (docs/operations.md, pipeline/monitoring/live.py reads it)."""
    return forecasts_dir(settings) / "live"


def reports_dir(settings: Settings) -> Path:
    """reports/NAME: the validation report and Data Docs, train_summary.json, metrics.json, the backtest."""
    return Path(settings.paths.reports) / check_dataset_name(settings.dataset)


def validation_report_path(settings: Settings) -> Path:
    return reports_dir(settings) / "validation.json"


def data_docs_dir(settings: Settings) -> Path:
    """reports/NAME/data_docs: the Great Expectations Data Docs of the last validation (index.html)."""
    return reports_dir(settings) / "data_docs"


def metrics_path(settings: Settings) -> Path:
    """reports/NAME/metrics.json: the registered model's test metrics (`dvc metrics show`, registry/report.py)."""
    return reports_dir(settings) / "metrics.json"


def plots_dir(settings: Settings) -> Path:
    """reports/NAME/plots: error_by_horizon.csv and forecast_vs_actual.csv (`dvc plots show`)."""
    return reports_dir(settings) / "plots"


def backtest_paths(settings: Settings) -> tuple[Path, Path]:
    """reports/NAME/backtest.json and its picture, backtest.png (registry/backtest.py)."""
    d = reports_dir(settings)
    return d / "backtest.json", d / "backtest.png"


def train_summary_path(settings: Settings) -> Path:
    """The last training run's outcome (registry/summary.write_summary): what `dvc metrics` and the corpus read."""
    return reports_dir(settings) / "train_summary.json"


def models_dir(settings: Settings) -> Path:
    """data/NAME/models: each candidate's ONNX file of the last training run."""
    return dataset_dir(settings) / "models"


def checkpoints_dir(settings: Settings, data_md5: str | None) -> Path:
    """The candidates' per-epoch checkpoints of a dataset, per version of its data (a resumed run finds its own)."""
    return Path(settings.paths.checkpoints) / check_dataset_name(settings.dataset) / (data_md5 or "data")


def monitoring_dir(settings: Settings) -> Path:
    """The monitor's files: points.parquet (the scored window), scores.parquet (one row per evaluation),
    state.json (the last evaluation, the last retrain trigger)."""
    return reports_dir(settings) / "monitoring"


SERIES_ID = "series_id"  # a panel's series key: one string per series (its id columns' values joined by "/")


def is_panel(meta: dict) -> bool:
    """Whether raw.json / validated.json describe a panel (many series in one long frame, ingest --id-col)."""
    return bool(meta.get("panel"))


def read_raw_meta(settings: Settings) -> dict:
    """raw.json alone (a panel's data is read partition by partition)."""
    name = settings.dataset
    pq, js = raw_paths(settings)
    if not pq.is_file() or not js.is_file():
        raise NotFoundError(f"{pq}: dataset '{name}' is not ingested; run `cellcast ingest` first")
    return json.loads(js.read_text())


def read_raw(settings: Settings) -> tuple[pd.DataFrame, dict]:
    """The canonical frame and metadata written by ingest."""
    meta = read_raw_meta(settings)
    return pd.read_parquet(raw_paths(settings)[0]), meta


def read_validated_meta(settings: Settings) -> dict:
    """validated.json alone (whether it is a panel, its series and their status)."""
    name = settings.dataset
    pq, js = validated_paths(settings)
    if not pq.is_file() or not js.is_file():
        raise NotFoundError(f"{pq}: dataset '{name}' is not validated; run `cellcast validate {name}` first")
    return json.loads(js.read_text())


def read_validated(settings: Settings) -> tuple[pd.DataFrame, dict]:
    """The validated frame and its metadata (policy report, bounds, data_md5) written by validate. One series:
    a panel is refused here (its rows would run one series into the next); read it with read_panel."""
    name = settings.dataset
    pq, js = validated_paths(settings)
    if not pq.is_file() or not js.is_file():
        raise NotFoundError(f"{pq}: dataset '{name}' is not validated; run `cellcast validate {name}` first")
    meta = json.loads(js.read_text())
    if is_panel(meta):
        raise ConfigError(
            f"{pq}: dataset '{name}' is a panel of {len(meta['panel']['series'])} series; this stage "
            f"takes one series (ingest one without --id-col)"
        )
    return pd.read_parquet(pq), meta


def read_panel(path: str | Path, series: list[str] | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """Rows of a panel Parquet file (raw.parquet, validated.parquet), sorted by (series_id, timestamp): all, or
    only the series named. A pyarrow dataset filter: row groups whose series_id range misses them are not read."""
    import pyarrow.dataset as ds

    data = ds.dataset(str(path), format="parquet")
    flt = ds.field(SERIES_ID).isin(list(series)) if series is not None else None
    return data.to_table(columns=columns, filter=flt).to_pandas()


def panel_partitions(path: str | Path) -> int:
    """How many partitions (row groups, each of whole series) a panel Parquet file holds."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(str(path)).metadata.num_row_groups


def read_partition(path: str | Path, groups: list[int], columns: list[str] | None = None) -> pd.DataFrame:
    """Row groups `groups` of a panel Parquet file (whole series each), through a pyarrow dataset fragment."""
    import pyarrow.dataset as ds

    fragment = next(iter(ds.dataset(str(path), format="parquet").get_fragments()))
    return fragment.subset(row_group_ids=list(groups)).to_table(columns=columns).to_pandas()


def read_validated_panel(
    settings: Settings, series: list[str] | None = None, columns: list[str] | None = None
) -> tuple[pd.DataFrame, dict]:
    """A validated panel's rows (all, or the series named) and validated.json; `panel.series` lists the series
    kept with their rows, start, end and status (ok | cold_start), `panel.dropped` those dropped and why."""
    name = settings.dataset
    pq, js = validated_paths(settings)
    if not pq.is_file() or not js.is_file():
        raise NotFoundError(f"{pq}: dataset '{name}' is not validated; run `cellcast validate {name}` first")
    meta = json.loads(js.read_text())
    if not is_panel(meta):
        raise ConfigError(f"{pq}: dataset '{name}' is one series, not a panel; read it with read_validated")
    return read_panel(pq, series, columns), meta
