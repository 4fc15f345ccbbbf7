"""Any CSV / Parquet file (or a bundled dataset) -> canonical Parquet + metadata.

Canonical frame: column `timestamp` (datetime64[ns], tz-naive; UTC if the input had a zone), then the
value columns, targets first, float64, sorted by time. A panel (`id_cols`, many series in long format)
puts `series_id` and the id columns first and sorts by (series_id, timestamp); its Parquet file keeps whole
series per row group (panel.py). With `agg`, readings at irregular times are first aggregated onto the
`freq` grid per series (resample.py), and the metadata says how many readings went into how many points.
Duplicated timestamps, gaps, NaN and inf are kept as they are: the validation policy decides about them. Ingest
only refuses what cannot be read as a time series, with one line naming the file and the problem, and keeps a copy
of the rejected input in quarantine. The input file is only ever read.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd

from ..catalog import SERIES_ID, quarantine_dir, raw_paths
from ..config import Settings, check_dataset_name
from ..errors import ConfigError, IngestError
from ..files import sha256_file, sha256_tree, utc_stamp, write_json, write_parquet
from . import datasets
from . import schedule as _schedule
from .frequency import gap_stats, infer_freq, to_freq
from .panel import check_id_options, describe_series, infer_panel_freq, pooled, sort_panel, write_panel
from .readers import canonical_frame, detect_format, read_csv, read_parquet, read_parquet_dataset
from .resample import check_agg, to_grid
from .schedule import Schedule


@dataclass
class SeriesMeta:
    name: str
    source: str  # "file" or "bundled:NAME"
    input_path: str
    input_sha256: str
    format: str  # csv | parquet | bundled
    time_col: str  # the time column as named in the input
    targets: list[str]
    features: list[str]
    freq: str  # pandas alias
    freq_source: str  # declared | inferred
    rows: int
    columns: list[str]
    start: str | None
    end: str | None
    gaps: dict  # {count, missing_steps, longest_steps, off_grid}
    duplicates: int  # rows whose timestamp repeats an earlier one
    unsorted: bool  # the input was not in time order (the output is)
    timezone: str | None  # the input's zone if it had one (values converted to UTC)
    ingested_at: str
    delimiter: str | None = None
    encoding: str | None = None
    decimal: str | None = None
    dataset: dict | None = None  # DatasetInfo of a bundled dataset
    extra: dict = field(default_factory=dict)
    # a panel: {id_cols, partition_rows, row_groups, series: {series_id: {ids, rows, observed_rows, start, end,
    # gaps, duplicates[, readings, grid_points]}}}; None: one series
    panel: dict | None = None
    # readings aggregated onto the grid (--agg): {freq, agg, readings, grid_points, merged_points, most_per_point}
    resample: dict | None = None
    # features whose values are known ahead (--future-features): rows after the last observation may carry them
    # for the horizon (the batch forecast reads them there)
    future_features: list[str] = field(default_factory=list)
    future_rows: int = 0  # rows after the last target observation (known-future values only)
    # the steps the series is observed at (data/schedule.py Schedule.to_dict): None keeps none (24/7)
    schedule: dict | None = None
    schedule_source: str = "none"  # detected | declared | none
    off_schedule: dict = field(default_factory=dict)  # readings at closed steps: {count, first}
    # a panel's columns constant within each series: {columns, source: {column: declared | detected}, values:
    # {series_id: {column: value}}}; kept here once per series, not in the rows
    static: dict = field(default_factory=dict)

    def schedule_line(self) -> str:
        """'observed 08:00-16:30, 18 steps a day, 7 days a week' (or 'declared ...'); '' without a schedule."""
        if not self.schedule:
            return ""
        how = "declared" if self.schedule_source == "declared" else "observed"
        strays = (self.off_schedule or {}).get("count") or 0
        most = next(iter((self.off_schedule or {}).get("series") or {}), None)
        where = f", most in series '{most}'" if most is not None else ""
        off = f" ({strays} readings off it, first {self.off_schedule['first']}{where}: left out)" if strays else ""
        return f"{how} {self.schedule['summary']}{off}"

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("panel", "resample"):  # a single series' raw.json stays as it was
            if d[k] is None:
                d.pop(k)
        if not d["static"]:
            d.pop("static")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SeriesMeta:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass
class IngestResult:
    name: str
    frame: pd.DataFrame
    meta: SeriesMeta
    parquet_path: Path
    meta_path: Path


def _describe(out: pd.DataFrame, freq: str, schedule: Schedule | None = None) -> dict:
    ts = out["timestamp"]
    return {
        "rows": int(len(out)),
        "columns": list(out.columns),
        "start": str(ts.iloc[0]) if len(ts) else None,
        "end": str(ts.iloc[-1]) if len(ts) else None,
        "gaps": gap_stats(ts.drop_duplicates(), freq, schedule),
        "duplicates": int(ts.duplicated().sum()),
    }


def _describe_panel(
    out: pd.DataFrame,
    freq: str,
    variables: list[str],
    id_cols: list[str],
    resampled: dict | None,
    schedule: Schedule | None = None,
) -> tuple[dict, dict]:
    """(the pooled single-series fields, the `panel` metadata without its row groups) of a sorted panel frame."""
    series = describe_series(out, freq, variables, id_cols, schedule)
    for sid, counts in ((resampled or {}).pop("series", None) or {}).items():
        series[sid].update(counts)
    return {**pooled(series), "columns": list(out.columns)}, {"id_cols": list(id_cols), "series": series}


def _write(out: pd.DataFrame, meta: SeriesMeta, settings: Settings) -> IngestResult:
    name = settings.dataset
    pq, js = raw_paths(settings)
    if meta.panel is not None:
        budget = settings.ingest.partition_rows
        meta.panel = {
            "id_cols": meta.panel["id_cols"],
            "partition_rows": budget,
            "row_groups": write_panel(out, pq, budget),
            "series": meta.panel["series"],
        }
    else:
        write_parquet(out, pq)
    write_json(js, meta.to_dict())
    return IngestResult(name, out, meta, pq, js)


def _quarantine(path: Path, error: Exception, settings: Settings, extra: dict) -> Path:
    name = settings.dataset
    q = quarantine_dir(settings)
    copied = None
    if path.is_file():
        shutil.copy2(path, q / path.name)
        copied = path.name
    elif path.is_dir() and not q.resolve().is_relative_to(path.resolve()):  # a Parquet dataset folder
        shutil.copytree(path, q / path.name)
        copied = path.name
    write_json(
        q / "report.json",
        {
            "stage": "ingest",
            "name": name,
            "input_path": str(path),
            "copied": copied,
            "error": str(error),
            "rule": getattr(error, "rule", type(error).__name__),
            "count": getattr(error, "count", None),
            "at": utc_stamp(),
            **extra,
        },
    )
    return q


def _check_options(
    time_col: str,
    targets: list[str],
    features: list[str],
    future: list[str] | None = None,
    id_cols: list[str] | None = None,
) -> None:
    if not targets:
        raise ConfigError("--target: at least one target column is needed")
    known_target = [c for c in (future or []) if c in targets]
    if known_target:
        raise ConfigError(f"--future-features: '{known_target[0]}' is a target: a value known ahead needs no forecast")
    names = targets + features
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise ConfigError(f"column '{dup[0]}' is listed more than once among targets and features")
    if time_col in names:
        raise ConfigError(f"column '{time_col}' is the time column; it cannot also be a target or feature")
    if "timestamp" in names:
        raise ConfigError("column 'timestamp' is reserved for the time column; it cannot be a target or feature")
    if id_cols:
        check_id_options(list(id_cols), time_col, names)


def schedule_of(frame: pd.DataFrame, freq: str, targets: list[str], spec, panel: bool) -> tuple[dict, Schedule | None]:
    """The schedule of a canonical frame: declared (`spec`: ingest.schedule or --schedule) or detected from the
    timestamps where a target is observed (data/schedule.py) -> ({schedule, schedule_source, off_schedule}, it)."""
    spec = spec.model_dump() if hasattr(spec, "model_dump") else spec
    got = _schedule.declared(spec, freq)
    seen = frame.loc[frame[targets].notna().any(axis=1).to_numpy()]
    sched: Schedule | None
    if isinstance(got, str):  # auto
        sched = _schedule.detect(seen["timestamp"], freq, seen[SERIES_ID] if panel else None)
        source = "detected" if sched is not None else "none"
    else:
        sched, source = got, ("declared" if got is not None else "none")
    fields = {
        "schedule": None if sched is None else sched.to_dict(),
        "schedule_source": source,
        "off_schedule": _schedule.off_schedule(seen["timestamp"], sched, seen[SERIES_ID] if panel else None),
    }
    return fields, sched


def split_static(
    frame: pd.DataFrame, declared: list[str], candidates: list[str], source: str
) -> tuple[pd.DataFrame, dict]:
    """A panel's columns constant within each series, taken out of the rows -> (the frame without them, raw.json's
    `static`). `declared` (--static) must be constant within every series and have a value in each; `candidates`
    (features not known ahead) become static when they are constant within every series and differ between some."""
    g = frame.groupby(SERIES_ID, sort=True)
    found: dict[str, str] = {}
    for c in declared:
        varies = g[c].nunique() > 1
        if varies.any():
            sid = str(varies.index[varies.to_numpy()][0])
            seen = frame.loc[frame[SERIES_ID] == sid, c].dropna().unique()[:2]
            raise IngestError.broken(
                "static",
                f"{source}: column '{c}' is not constant within series '{sid}' ({seen[0]:g} and {seen[1]:g}; "
                f"{int(varies.sum())} series vary): a --static column holds one value per series; "
                f"pass it as --features",
                int(varies.sum()),
            )
        empty = g[c].count() == 0
        if empty.any():
            raise IngestError.broken(
                "static",
                f"{source}: column '{c}' has no value in series '{empty.index[empty.to_numpy()][0]}' "
                f"({int(empty.sum())} series): a --static column needs its value in every series",
                int(empty.sum()),
            )
        found[c] = "declared"
    for c in candidates:
        per = g[c].nunique()
        if (per == 1).all() and g[c].first().nunique() > 1:
            found[c] = "detected"
    if not found:
        return frame, {}
    cols = list(found)
    firsts = g[cols].first()
    values = {str(sid): {c: float(row[c]) for c in cols} for sid, row in firsts.iterrows()}
    return frame.drop(columns=cols), {"columns": cols, "source": found, "values": values}


def future_rows(frame: pd.DataFrame, targets: list[str]) -> int:
    """Rows after the last one where every target is observed: the known-future rows of a frame."""
    done = frame[targets].notna().all(axis=1).to_numpy()
    if not done.any():
        return 0
    return int(done[::-1].argmax())  # trailing rows before the last observed one, counted from the end


def _future_rows(frame: pd.DataFrame, targets: list[str], id_cols: list[str]) -> int:
    """Known-future rows of a frame; of a panel, summed over its series."""
    if not id_cols:
        return future_rows(frame, targets)
    return int(sum(future_rows(g, targets) for _, g in frame.groupby(id_cols, sort=False, dropna=False)))


def ingest_file(
    path: str | Path,
    *,
    time_col: str,
    targets: list[str],
    features: list[str] | None = None,
    freq: str | None = None,
    fmt: Literal["csv", "parquet"] | None = None,
    delimiter: str | None = None,
    time_format: str | None = None,
    time_unit: str | None = None,
    dayfirst: bool | None = None,
    id_cols: list[str] | None = None,
    agg: str | None = None,
    settings: Settings,
    future_features: list[str] | None = None,
    schedule=None,
    static: list[str] | None = None,
) -> IngestResult:
    """Read a CSV or Parquet file into data/NAME/raw.parquet + raw.json. Failures: IngestError, input quarantined.

    schedule: the steps the series is observed at: auto | none | {days, open, close} | 'Mon-Fri 08:00-16:30'
    (default: params.yaml ingest.schedule; data/schedule.py); recorded in raw.json.
    static: a panel's columns constant within each series (default: params.yaml ingest.static), kept once per series
    in raw.json (`static`) and read by the global model; features constant within every series are found as well.

    future_features: columns whose values are known ahead (default: params.yaml ingest.future_features); they are
    features too, and rows after the last target observation may carry them for the horizon.

    time_format: a strftime format for the time column (else detected); dayfirst: True (day-first dates) or
    False (month-first), else chosen only where the file is unambiguous about it; time_unit: s | ms | us | ns
    when the time column holds Unix times. The reading used is recorded in raw.json (`extra.time_reading`).
    id_cols: the columns naming each row's series (long format: a panel; their tuple is the series key).
    agg: mean | sum | last | max: readings put on the `freq` grid per series (irregular times)."""
    name = settings.dataset
    check_dataset_name(name, "--name")
    targets = list(targets)
    id_cols = list(id_cols or [])
    future = list(settings.ingest.future_features if future_features is None else future_features)
    features = list(features or [])
    static = list(settings.ingest.static if static is None else static)
    if static and not id_cols:
        raise ConfigError("--static: columns constant per series need a panel (--id-col); one series has one value")
    _check_options(time_col, targets, features + static, future, id_cols)
    check_agg(agg, freq)
    features += [c for c in future if c not in features]  # known ahead, and read in the lookback as well
    path = Path(path)
    pq, _ = raw_paths(settings)
    if pq.exists() and path.exists() and pq.resolve() == path.resolve():
        raise ConfigError(f"{path}: is the output of dataset '{name}'; ingest a copy under another --name")
    declared = to_freq(freq) if freq else None
    try:
        if not path.exists():
            raise IngestError.broken(
                "missing_file", f"{path}: file not found; check the path (relative paths start in {Path.cwd()})"
            )
        if path.is_dir() and not (fmt == "parquet" and id_cols):
            raise IngestError.broken(
                "directory",
                f"{path}: is a directory, not a CSV or Parquet file; pass a file in it "
                f"(a Parquet dataset partitioned by series: --parquet DIR with --id-col)",
            )
        if path.is_dir():  # a Parquet dataset, e.g. one folder per series (sensor=A/...): read through pyarrow
            kind, sha = "parquet", sha256_tree(path)
            df, info = read_parquet_dataset(path)
        else:
            kind = detect_format(path, fmt)
            sha = sha256_file(path)
            df, info = read_csv(path, delimiter) if kind == "csv" else read_parquet(path)
        out, more = canonical_frame(
            path,
            df,
            time_col,
            targets,
            features + static,
            kind,
            info.get("delimiter"),
            time_format,
            time_unit,
            dayfirst,
            info.get("encoding"),
            id_cols,
        )
        resampled = None
        if agg and declared:  # check_agg: an aggregation comes with its frequency
            out, resampled = to_grid(out, declared, agg, targets + features + static, id_cols)
        statics: dict = {}
        if id_cols:
            out, statics = split_static(out, static, [c for c in features if c not in future], str(path))
            features = [c for c in features if c not in statics.get("columns", [])]
        if id_cols:
            f = declared or infer_panel_freq(out, str(path))
        else:
            f = declared or infer_freq(out["timestamp"], str(path))
        kept, sched = schedule_of(
            out, f, targets, settings.ingest.schedule if schedule is None else schedule, bool(id_cols)
        )
    except (IngestError, ConfigError) as e:
        _quarantine(
            path,
            e,
            settings,
            {
                "format": fmt,
                "time_col": time_col,
                "targets": targets,
                "features": features,
                "id_cols": id_cols,
                "agg": agg,
            },
        )
        raise
    if id_cols:
        described, panel = _describe_panel(out, f, targets + features, id_cols, resampled, sched)
    else:
        described, panel = _describe(out, f, sched), None
    meta = SeriesMeta(
        name=name,
        source="file",
        input_path=str(path),
        input_sha256=sha,
        format=kind,
        time_col=time_col,
        targets=targets,
        features=features,
        freq=f,
        freq_source="declared" if declared else "inferred",
        timezone=more["timezone"],
        unsorted=more["unsorted"],
        ingested_at=datetime.now(UTC).isoformat(),
        delimiter=info.get("delimiter"),
        encoding=info.get("encoding"),
        decimal=more["decimal"],
        extra={
            "time_format": time_format,
            "time_unit": time_unit,
            "time_reading": more["time_reading"],
            # the order read, so a re-run of a grown file reads it the same way
            "dayfirst": {"day-first": True, "month-first": False}.get(more["time_reading"]["order"]),
        },
        panel=panel,
        resample=resampled,
        future_features=future,
        future_rows=_future_rows(out, targets, id_cols) if future else 0,
        static=statics,
        **kept,
        **described,
    )
    if schedule is not None:  # given for this file: a re-run reads it under the same schedule
        meta.extra["schedule"] = schedule.model_dump() if hasattr(schedule, "model_dump") else schedule
    return _write(out, meta, settings)


def ingest_bundled(settings: Settings) -> IngestResult:
    """A bundled dataset (see `cellcast datasets`) into data/NAME/raw.parquet + raw.json."""
    name = settings.dataset
    info = datasets.dataset_info(name)
    future = list(settings.ingest.future_features)
    unknown = [c for c in future if c not in info.features]
    if unknown:
        raise ConfigError(
            f"ingest.future_features: '{unknown[0]}' is not a feature of the bundled dataset {name} "
            f"({', '.join(info.features) or 'it has none'})"
        )
    out = datasets.load_bundled(name)
    src = datasets.source_file(name)
    panel = None
    if info.id_cols:
        out, unsorted = sort_panel(out)
    else:
        unsorted = not out["timestamp"].is_monotonic_increasing
        if unsorted:
            out = out.sort_values("timestamp", kind="stable", ignore_index=True)
    ahead = datasets.known_future(name, future, out["timestamp"].iloc[-1]) if future and not info.id_cols else None
    if ahead is not None and len(ahead):  # the values it can state for the days after its last row
        out = pd.concat([out, ahead], ignore_index=True)
    kept, sched = schedule_of(out, info.freq, list(info.targets), settings.ingest.schedule, bool(info.id_cols))
    if info.id_cols:
        described, panel = _describe_panel(
            out, info.freq, list(info.targets) + list(info.features), list(info.id_cols), None, sched
        )
    else:
        described = _describe(out, info.freq, sched)
    meta = SeriesMeta(
        name=name,
        source=f"bundled:{name}",
        input_path=str(src),
        input_sha256=sha256_file(src),
        format="bundled",
        time_col=info.time_col,
        targets=list(info.targets),
        features=list(info.features),
        freq=info.freq,
        freq_source="declared",
        timezone=None,
        unsorted=bool(unsorted),
        ingested_at=datetime.now(UTC).isoformat(),
        dataset=info.to_dict(),
        panel=panel,
        future_features=future,
        future_rows=0 if ahead is None else int(len(ahead)),
        **kept,
        **described,
    )
    return _write(out, meta, settings)


def source_of(settings: Settings) -> dict | None:
    """How a user file was ingested (from raw.json): ingest_file's options, so a re-run (a scheduled
    refresh, a retrain) reads the file's latest contents the same way. None for bundled datasets."""
    _, js = raw_paths(settings)
    if not js.is_file():
        return None
    meta = json.loads(js.read_text())
    if meta.get("source") != "file":
        return None
    return {
        "path": meta["input_path"],
        "time_col": meta["time_col"],
        "targets": meta["targets"],
        "features": meta.get("features") or [],
        "fmt": meta.get("format"),
        "delimiter": meta.get("delimiter"),
        "freq": meta["freq"] if meta.get("freq_source") == "declared" else None,
        "time_format": (meta.get("extra") or {}).get("time_format"),
        "time_unit": (meta.get("extra") or {}).get("time_unit"),
        "dayfirst": (meta.get("extra") or {}).get("dayfirst"),
        "future_features": meta.get("future_features") or [],
        **({"schedule": (meta.get("extra") or {})["schedule"]} if (meta.get("extra") or {}).get("schedule") else {}),
        **(
            {"static": [c for c, how in meta["static"]["source"].items() if how == "declared"]}
            if meta.get("static")
            else {}
        ),
        **({"id_cols": meta["panel"]["id_cols"]} if meta.get("panel") else {}),
        **({"agg": meta["resample"]["agg"]} if meta.get("resample") else {}),
    }
