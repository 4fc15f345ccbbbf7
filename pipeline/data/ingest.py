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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from ..catalog import SERIES_ID, quarantine_dir, quarantined_files, raw_paths
from ..config import Settings, check_dataset_name
from ..errors import ConfigError, IngestError
from ..files import parquet_groups, sha256_file, sha256_tree, utc_stamp, write_json, write_parquet
from . import datasets
from . import schedule as _schedule
from .columns import choose_columns
from .frequency import gap_stats, infer_freq, to_freq
from .panel import (
    check_id_options,
    decide_freq,
    describe_series,
    freq_votes,
    group_rows,
    infer_panel_freq,
    pooled,
    series_bounds,
    sort_panel,
    write_panel,
)
from .readers import (
    canonical_frame,
    csv_parts,
    detect_format,
    parquet_parts,
    read_csv,
    read_parquet,
    read_parquet_dataset,
)
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
        quarantined_files(q)[2],
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
    time_col: str | None,
    targets: list[str],
    features: list[str],
    future: list[str] | None = None,
    id_cols: list[str] | None = None,
    chosen_later: bool = False,
) -> None:
    """The column options checked against each other. `chosen_later`: a file's time column and target may be
    left to data/columns.py (read from the file)."""
    if not targets and not chosen_later:
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

    def seen(sid: str, c: str) -> tuple:
        return tuple(frame.loc[frame[SERIES_ID] == sid, c].dropna().unique()[:2])

    statics = static_found(static_stats(frame, declared + candidates), declared, candidates, source, seen)
    return (frame.drop(columns=statics["columns"]) if statics else frame), statics


def static_stats(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Per series of a panel frame (its index) and column: distinct values, values, the first, the least, the most.
    Parts of a panel holding different series: their tables stack."""
    if not cols:
        return pd.DataFrame(index=pd.Index(frame[SERIES_ID].unique(), name=SERIES_ID))
    g = frame.groupby(SERIES_ID, sort=True)[cols]
    return pd.concat(
        {"nunique": g.nunique(), "count": g.count(), "first": g.first(), "min": g.min(), "max": g.max()}, axis=1
    )


def static_found(stats: pd.DataFrame, declared: list[str], candidates: list[str], source: str, seen=None) -> dict:
    """raw.json's `static` from static_stats (module docstring of split_static); a declared column that varies within
    a series or misses in one is refused. `seen(sid, column)`: two of its values there (else its least and most)."""
    found: dict[str, str] = {}
    for c in declared:
        varies = stats[("nunique", c)] > 1
        if varies.any():
            sid = str(varies.index[varies.to_numpy()][0])
            two = seen(sid, c) if seen else (stats.at[sid, ("min", c)], stats.at[sid, ("max", c)])
            raise IngestError.broken(
                "static",
                f"{source}: column '{c}' is not constant within series '{sid}' ({two[0]:g} and {two[1]:g}; "
                f"{int(varies.sum())} series vary): a --static column holds one value per series; "
                f"pass it as --features",
                int(varies.sum()),
            )
        empty = stats[("count", c)] == 0
        if empty.any():
            raise IngestError.broken(
                "static",
                f"{source}: column '{c}' has no value in series '{empty.index[empty.to_numpy()][0]}' "
                f"({int(empty.sum())} series): a --static column needs its value in every series",
                int(empty.sum()),
            )
        found[c] = "declared"
    for c in candidates:
        if (stats[("nunique", c)] == 1).all() and stats[("first", c)].nunique() > 1:
            found[c] = "detected"
    if not found:
        return {}
    cols = list(found)
    firsts = stats["first"][cols]
    values = {str(sid): {c: float(row[c]) for c in cols} for sid, row in firsts.iterrows()}
    return {"columns": cols, "source": found, "values": values}


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
    time_col: str | None,
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

    time_col None, targets empty: the file's one date column, its one numeric column besides (data/columns.py).

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
    path = Path(path)
    how = _how_to_read(
        path,
        settings,
        time_col=time_col,
        targets=targets,
        features=features,
        freq=freq,
        delimiter=delimiter,
        time_format=time_format,
        time_unit=time_unit,
        dayfirst=dayfirst,
        id_cols=id_cols,
        agg=agg,
        future_features=future_features,
        schedule=schedule,
        static=static,
    )
    kind, sha, got = _read_or_quarantine(path, fmt, how, settings)
    meta = _file_meta(name, path, kind, sha, how, got)
    if schedule is not None:  # given for this file: a re-run reads it under the same schedule
        meta.extra["schedule"] = schedule.model_dump() if hasattr(schedule, "model_dump") else schedule
    if got.written is not None:  # read part by part: raw.parquet is written already
        write_json(raw_paths(settings)[1], meta.to_dict())
        return IngestResult(name, got.frame, meta, *raw_paths(settings))
    return _write(got.frame, meta, settings)


def _how_to_read(
    path: Path,
    settings: Settings,
    *,
    time_col: str | None,
    targets: list[str],
    features: list[str] | None,
    freq: str | None,
    delimiter: str | None,
    time_format: str | None,
    time_unit: str | None,
    dayfirst: bool | None,
    id_cols: list[str] | None,
    agg: str | None,
    future_features: list[str] | None,
    schedule,
    static: list[str] | None,
) -> _How:
    """ingest_file's options checked against each other and completed from params.yaml `ingest`; ConfigError naming
    the option that cannot hold, or when `path` is the dataset's own raw.parquet."""
    targets = list(targets)
    id_cols = list(id_cols or [])
    future = list(settings.ingest.future_features if future_features is None else future_features)
    features = list(features or [])
    static = list(settings.ingest.static if static is None else static)
    if static and not id_cols:
        raise ConfigError("--static: columns constant per series need a panel (--id-col); one series has one value")
    _check_options(time_col, targets, features + static, future, id_cols, chosen_later=True)
    check_agg(agg, freq)
    features += [c for c in future if c not in features]  # known ahead, and read in the lookback as well
    pq, _ = raw_paths(settings)
    if pq.exists() and path.exists() and pq.resolve() == path.resolve():
        raise ConfigError(f"{path}: is the output of dataset '{settings.dataset}'; ingest a copy under another --name")
    return _How(
        time_col,
        targets,
        features,
        static,
        future,
        id_cols,
        to_freq(freq) if freq else None,
        agg,
        delimiter,
        time_format,
        time_unit,
        dayfirst,
        settings.ingest.schedule if schedule is None else schedule,
    )


def _read_or_quarantine(path: Path, fmt: str | None, how: _How, settings: Settings) -> tuple[str, str, _Read]:
    """The file read as `how` says (part by part where a panel's Parquet allows it) -> (format, sha, what it gave);
    a file it cannot read goes to quarantine with the reason, and the error is raised on."""
    options = {
        "format": fmt,
        "time_col": how.time_col,
        "targets": how.targets,
        "features": how.features,
        "id_cols": how.id_cols,
        "agg": how.agg,
    }
    try:
        kind, sha = _check_input(path, fmt, how.id_cols)
        if how.time_col is None or not how.targets:
            _choose_columns(path, kind, how)
        parts, info = _parts(path, kind, how, settings.ingest.partition_rows) if how.id_cols else ([], {})
        got = _read_parts(path, parts, how, settings, kind, info) if parts else None
        if got is None:  # one part, or series that do not keep to one part each
            got = _read_whole(path, kind, how)
    except (IngestError, ConfigError) as e:
        _quarantine(path, e, settings, options)
        raise
    return kind, sha, got


def _choose_columns(path: Path, kind: str, how: _How) -> None:
    """The time column and targets not given, read from the file (data/columns.py) into `how`, checked as given."""
    named = how.id_cols + how.features + how.static + how.future
    how.time_col, how.targets, how.chosen = choose_columns(path, kind, how.delimiter, how.time_col, how.targets, named)
    _check_options(how.time_col, how.targets, how.features + how.static, how.future, how.id_cols)


@dataclass
class _How:
    """How ingest_file reads a file: its options, checked."""

    time_col: str | None  # None until read from the file (_choose_columns)
    targets: list[str]
    features: list[str]  # the known-future ones included; static columns are taken out once found
    static: list[str]
    future: list[str]
    id_cols: list[str]
    declared: str | None  # --freq
    agg: str | None
    delimiter: str | None
    time_format: str | None
    time_unit: str | None
    dayfirst: bool | None
    schedule: object  # ingest.schedule or --schedule
    chosen: dict = field(default_factory=dict)  # the columns read from the file rather than given


@dataclass
class _Read:
    """What reading a file gave: the canonical frame (read part by part: its columns only, no rows), the facts for
    raw.json, and (read part by part) the row groups written."""

    frame: pd.DataFrame
    info: dict  # the reader's: delimiter, encoding
    more: dict  # canonical_frame's: timezone, unsorted, decimal, time_reading
    freq: str
    features: list[str]
    statics: dict
    resampled: dict | None
    kept: dict  # schedule_of's fields
    described: dict
    panel: dict | None
    future_rows: int
    written: int | None = None  # row groups of raw.parquet, when read part by part


def _check_input(path: Path, fmt: str | None, id_cols: list[str]) -> tuple[str, str]:
    """The input exists and is a file (or a Parquet folder of a panel) -> (format, sha256)."""
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
        return "parquet", sha256_tree(path)
    return detect_format(path, fmt), sha256_file(path)


def _canonical(path: Path, df: pd.DataFrame, kind: str, info: dict, how: _How, first_row: int = 0):
    """canonical_frame with ingest_file's options, then put on the grid (--agg) -> (frame, more, resampled)."""
    assert how.time_col is not None  # given, or chosen before any reading (_choose_columns)
    out, more = canonical_frame(
        path,
        df,
        how.time_col,
        how.targets,
        how.features + how.static,
        kind,
        info.get("delimiter"),
        how.time_format,
        how.time_unit,
        how.dayfirst,
        info.get("encoding"),
        how.id_cols,
        first_row,
    )
    resampled = None
    if how.agg and how.declared:  # check_agg: an aggregation comes with its frequency
        out, resampled = to_grid(out, how.declared, how.agg, how.targets + how.features + how.static, how.id_cols)
    return out, more, resampled


def _read_whole(path: Path, kind: str, how: _How) -> _Read:
    """The whole file in one frame: canonical, on its grid, static columns taken out, frequency and schedule."""
    if path.is_dir():
        df, info = read_parquet_dataset(path)
    else:
        df, info = read_csv(path, how.delimiter) if kind == "csv" else read_parquet(path)
    out, more, resampled = _canonical(path, df, kind, info, how)
    del df
    statics: dict = {}
    features = how.features
    if how.id_cols:
        candidates = [c for c in features if c not in how.future]
        out, statics = split_static(out, how.static, candidates, str(path))
        features = [c for c in features if c not in statics.get("columns", [])]
        f = how.declared or infer_panel_freq(out, str(path))
    else:
        f = how.declared or infer_freq(out["timestamp"], str(path))
    kept, sched = schedule_of(out, f, how.targets, how.schedule, bool(how.id_cols))
    if how.id_cols:
        described, panel = _describe_panel(out, f, how.targets + features, how.id_cols, resampled, sched)
    else:
        described, panel = _describe(out, f, sched), None
    rows = _future_rows(out, how.targets, how.id_cols) if how.future else 0
    return _Read(out, info, more, f, features, statics, resampled, kept, described, panel, rows)


def _file_meta(name: str, path: Path, kind: str, sha: str, how: _How, got: _Read) -> SeriesMeta:
    more = got.more
    assert how.time_col is not None  # the file was read: given or chosen
    return SeriesMeta(
        name=name,
        source="file",
        input_path=str(path),
        input_sha256=sha,
        format=kind,
        time_col=how.time_col,
        targets=how.targets,
        features=got.features,
        freq=got.freq,
        freq_source="declared" if how.declared else "inferred",
        timezone=more["timezone"],
        unsorted=more["unsorted"],
        ingested_at=datetime.now(UTC).isoformat(),
        delimiter=got.info.get("delimiter"),
        encoding=got.info.get("encoding"),
        decimal=more["decimal"],
        extra={
            "time_format": how.time_format,
            "time_unit": how.time_unit,
            "time_reading": more["time_reading"],
            # the order read, so a re-run of a grown file reads it the same way
            "dayfirst": {"day-first": True, "month-first": False}.get(more["time_reading"]["order"]),
            **({"chosen_columns": how.chosen} if how.chosen else {}),
        },
        panel=got.panel,
        resample=got.resampled,
        future_features=how.future,
        future_rows=got.future_rows,
        static=got.statics,
        **got.kept,
        **got.described,
    )


# --- a panel read part by part -------------------------------------------------------------------
# A Parquet panel larger than `ingest.partition_rows` (a folder of files, or a file of several row groups) is read
# a part at a time: each part made canonical and kept aside (first pass: what decides the frequency and the static
# columns is tallied), then each part described and written as whole-series row groups (second pass). Memory holds
# one part, not the panel. The series must keep to one part each and come in order (a series cut where a part
# ends is carried into the next); where they do not, the file is read whole as before.


class _NotInParts(Exception):
    """The panel's series do not keep to one part each, in order: read it whole."""


def _parts(path: Path, kind: str, how: _How, budget: int) -> tuple[Iterable[Callable[[], pd.DataFrame]], dict]:
    """The readers of a panel file's parts of about `budget` rows (none: it is read whole), and what the reading
    found (a CSV's delimiter and encoding)."""
    if kind == "csv" and not path.is_dir():
        return csv_parts(path, how.delimiter, budget)
    return parquet_parts(path, budget), {}


def _read_parts(
    path: Path, parts: Iterable, how: _How, settings: Settings, kind: str = "parquet", info: dict | None = None
) -> _Read | None:
    """The panel read part by part (section comment above), raw.parquet written; None: read it whole instead."""
    tmp = raw_paths(settings)[0].parent / ".ingest-parts"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        first = _first_pass(path, parts, how, tmp, kind, info or {})
        return _second_pass(path, how, first, settings)
    except _NotInParts:
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _with_last(items: Iterable) -> Iterator[tuple[Any, bool]]:
    """Each item with whether it is the last (one item read ahead: the parts of a CSV are read as they are taken)."""
    it = iter(items)
    item = next(it, _END)
    while item is not _END:
        after = next(it, _END)
        yield item, after is _END
        item = after


_END = object()


def _first_pass(
    path: Path, parts: Iterable, how: _How, tmp: Path, kind: str = "parquet", info: dict | None = None
) -> dict:
    """Each part canonical and on its grid, kept in `tmp`; tallied: frequency votes, static statistics, known-future
    rows, the reading, the resampling. Raises _NotInParts where a series spans parts or they come out of order."""
    votes: Counter = Counter()
    refusal = None
    stats, files, resampled = [], [], None
    more: dict = {}
    carried, row, last, future = None, 0, None, 0
    cols = how.static + [c for c in how.features if c not in how.future]
    for k, (read, last_part) in enumerate(_with_last(parts)):
        df = read()
        first_row = row - (0 if carried is None else len(carried))
        row += len(df)
        if carried is not None:
            df = pd.concat([carried, df], ignore_index=True)
        carried = None
        if not last_part:  # the rows of the series this part ends in wait for the rest of it
            tail = (df[how.id_cols] == df[how.id_cols].iloc[-1]).all(axis=1).to_numpy()
            df, carried = df[~tail].reset_index(drop=True), df[tail].reset_index(drop=True)
            if not len(df):  # the part is one series, and it goes on in the next
                continue
        out, m, res = _canonical(path, df, kind, info or {}, how, first_row)
        del df
        sid = out[SERIES_ID]
        if last is not None and sid.iat[0] <= last:
            raise _NotInParts
        last = sid.iat[-1]
        if how.dayfirst is None and m["time_reading"].get("order"):  # the later parts read as the first
            how.dayfirst = {"day-first": True, "month-first": False}.get(m["time_reading"]["order"])
        more = more or m
        more["unsorted"] = bool(more["unsorted"] or m["unsorted"])
        resampled = _merge_resampled(resampled, res)
        if not how.declared:
            v, e = freq_votes(out, str(path))
            votes.update(v)
            refusal = refusal or e
        stats.append(static_stats(out, cols))
        future += _future_rows(out, how.targets, how.id_cols) if how.future else 0
        files.append(tmp / f"part-{k:05d}.parquet")
        out.to_parquet(files[-1], index=False)
    return {
        "freq": how.declared or decide_freq(votes, refusal),
        "stats": pd.concat(stats) if stats else None,
        "files": files,
        "more": more,
        "resampled": resampled,
        "future_rows": future,
        "info": info or {},
    }


def _merge_resampled(a: dict | None, b: dict | None) -> dict | None:
    """to_grid's counts of two parts as one."""
    if a is None or b is None:
        return a or b
    out = {**a, **{k: a[k] + b[k] for k in ("readings", "grid_points", "merged_points")}}
    out["most_per_point"] = max(a["most_per_point"], b["most_per_point"])
    out["series"] = {**a.get("series", {}), **b.get("series", {})}
    return out


def _second_pass(path: Path, how: _How, first: dict, settings: Settings) -> _Read:
    """The kept parts, static columns taken out, described and written into raw.parquet as whole-series row
    groups. The schedule is detected on the first part's series (a sample, said in raw.json) and held to by all."""
    f = first["freq"]
    candidates = [c for c in how.features if c not in how.future]
    statics = static_found(first["stats"], how.static, candidates, str(path)) if first["stats"] is not None else {}
    drop = statics.get("columns", [])
    features = [c for c in how.features if c not in drop]
    head = pd.read_parquet(first["files"][0]).drop(columns=drop)
    kept, sched = schedule_of(head, f, how.targets, how.schedule, True)
    off: dict = {"count": 0, "first": None}
    series: dict = {}
    groups = 0
    per_series = (first["resampled"] or {}).get("series") or {}
    with parquet_groups(raw_paths(settings)[0]) as add:
        for file in first["files"]:
            out = pd.read_parquet(file).drop(columns=drop)
            seen = out.loc[out[how.targets].notna().any(axis=1).to_numpy()]
            off = _merge_off(off, _schedule.off_schedule(seen["timestamp"], sched, seen[SERIES_ID]))
            described = describe_series(out, f, how.targets + features, how.id_cols, sched)
            for sid in described:
                described[sid].update(per_series.get(sid, {}))
            series.update(described)
            for a, b in group_rows(series_bounds(out), settings.ingest.partition_rows):
                add(out.iloc[a:b])
                groups += 1
            columns = list(out.columns)
    kept["off_schedule"] = off
    resampled = first["resampled"]
    if resampled:
        resampled = {k: v for k, v in resampled.items() if k != "series"}
    panel = {
        "id_cols": list(how.id_cols),
        "partition_rows": settings.ingest.partition_rows,
        "row_groups": groups,
        "series": series,
        # the schedule is detected on the first part's series: a sample of the panel
        "read": {"parts": len(first["files"]), "first_part_series": int(head[SERIES_ID].nunique())},
    }
    return _Read(
        pd.DataFrame(columns=columns),
        first["info"],
        first["more"],
        f,
        features,
        statics,
        resampled,
        kept,
        {**pooled(series), "columns": columns},
        panel,
        first["future_rows"],
        groups,
    )


def _merge_off(a: dict, b: dict) -> dict:
    """off_schedule's counts of two parts as one (the series with most strays first)."""
    if not b["count"]:
        return a
    series = {**a.get("series", {}), **b.get("series", {})}
    return {
        "count": a["count"] + b["count"],
        "first": a["first"] or b["first"],
        "series": dict(sorted(series.items(), key=lambda kv: -kv[1])),
    }


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
