"""Validating a panel per series, partition by partition.

raw.parquet of a panel holds whole series per row group (panel.py). `validate_partitions` takes some of
those row groups, runs the Great Expectations suite once over their long frame (the series id in the batch:
every failed rule counts its rows per series), checks each series' time order, applies the policy of
`settings.ingest` to each series on its own grid (dedupe, snapping, fill, segment; off-hours breaks), and
judges each series' length against one lookback + horizon for the whole panel, its splits grown and its test
windows counted as the series pool them for promotion (splits.panel_test_rule):
  ok          train, validation and test windows of its own (ingest.min_windows; ingest.min_test_horizons, at most
              its share of evaluate.min_decision_paths)
  cold_start  too short for its own validation/test split, but holds at least one whole window: kept, flagged
  bad         broke a rule, or cannot hold one window (rule `too_short`)
`validate_panel` maps it over the partitions (in this process by default, in order, one partition in memory at
a time; or through any `mapper(fn, tasks)`, e.g. a Dask client's map + gather), writes the kept series to
validated.parquet (row groups as in raw.parquet) and applies `ingest.bad_series` to the bad ones: reject
fails the dataset with one line naming the series and the rule; drop removes them into quarantine with their
report and names them in the summary. The report counts series in, kept, cold start and dropped (and why).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ..catalog import (
    SERIES_ID,
    data_docs_dir,
    future_path,
    panel_partitions,
    quarantine_dir,
    quarantined_files,
    raw_paths,
    read_partition,
    validated_paths,
    validation_report_path,
)
from ..config import Settings
from ..errors import DataValidationError
from ..files import md5_file, parquet_groups, write_json, write_parquet
from .cleaning import apply_policy, known_future_rows
from .expectations import Suite
from .findings import EXAMPLES, REMEDY, RuleFailure, ValidationReport
from .panel import series_bounds
from .schedule import as_schedule
from .splits import (
    filled_mask,
    panel_remedy,
    panel_test_rule,
    resolve_window,
    series_rows,
    split_for,
    test_origins,
    usable_windows,
    window_shortfall,
    window_starts,
)

OK, COLD_START = "ok", "cold_start"
_SHOWN = 3  # bad series named in a one-line refusal


@dataclass
class PartitionTask:
    """One unit of work: row groups of a panel's raw.parquet, and all a worker needs to validate them."""

    name: str
    path: str  # raw.parquet, absolute (a worker may run elsewhere on a shared filesystem)
    row_groups: list[int]
    meta: dict  # raw.json: targets, features, freq, panel.id_cols
    settings: Settings
    lookback: int
    horizon: int
    index: int = 0
    docs_dir: str | None = None  # Data Docs (in this process only: workers elsewhere write none)
    test_horizons: int | None = None  # horizons each series' test split grows to hold (splits.test_horizons)
    test_need: int | None = None  # non-overlapping test windows a series needs (splits.series_test_need)


@dataclass
class PartitionResult:
    index: int
    rows_in: int
    frame: pd.DataFrame  # the kept series, validated (series_id, id columns, timestamp, values, filled:)
    series: dict  # series_id -> its report (kept series)
    bad: dict  # series_id -> {rule, column, count, examples, detail}
    bad_rows: pd.DataFrame  # the raw rows of the bad series (for quarantine)
    gx: dict  # this partition's GX result
    future: pd.DataFrame | None = None  # the kept series' rows after their last observation (known-future columns)
    failure: dict | None = None  # a rule broken by the whole partition (a missing column...): the dataset fails
    worker: str = ""  # host:pid that did it
    seconds: float = 0.0


_SUITES: dict = {}  # per process: a GX suite is built once and runs every partition given to this process


def _suite(task: PartitionTask, cols: list[str], id_cols: list[str], bounds: dict) -> Suite:
    key = (
        task.name,
        tuple(cols),
        tuple(id_cols),
        task.settings.ingest.dedupe,
        tuple(sorted((k, tuple(v)) for k, v in bounds.items())),
        task.docs_dir,
    )
    if key not in _SUITES:
        _SUITES.clear()
        _SUITES[key] = Suite(
            task.name,
            cols,
            task.settings.ingest.dedupe,
            bounds,
            docs_dir=Path(task.docs_dir) if task.docs_dir else None,
            id_cols=id_cols,
        )
    return _SUITES[key]


def _bounds(meta: dict, settings: Settings) -> dict:
    cols = list(meta["targets"]) + list(meta.get("features") or [])
    return {c: list(v) for c, v in settings.validate_.bounds.items() if c in cols}


def _unordered(frame: pd.DataFrame) -> dict[str, int]:
    """Series whose rows go back in time (ingest sorts them: a file changed since), with how many steps back."""
    codes = pd.factorize(frame[SERIES_ID])[0]
    ts = frame["timestamp"].to_numpy()
    back = (codes[1:] == codes[:-1]) & (ts[1:] < ts[:-1])
    if not back.any():
        return {}
    return {str(k): int(v) for k, v in frame[SERIES_ID].iloc[1:][back].value_counts(sort=False).items()}


def _window_status(
    out: pd.DataFrame, cols: list[str], targets: list[str], task: PartitionTask
) -> tuple[str, dict, str | None]:
    """(ok | cold_start, window counts, why cold start) of one validated series; RuleFailure too_short when it
    cannot hold one window of lookback + horizon that crosses no break."""
    lookback, horizon, settings = task.lookback, task.horizon, task.settings
    n = len(out)
    valid = usable_windows(
        out[cols].to_numpy(dtype="float64"), filled_mask(out, cols), lookback, horizon, [cols.index(c) for c in targets]
    )
    if not valid.any():
        raise RuleFailure(
            "timestamp",
            "too_short",
            n,
            [f"{n} rows hold no window of lookback {lookback} + horizon {horizon} that crosses no break"],
        )
    w = settings.window
    v, t = split_for(n, horizon, settings, task.test_horizons)
    starts = window_starts(n, lookback, horizon, v, t, w.stride, valid)
    counts = {k: int(len(s)) for k, s in starts.items()}
    counts["test_origins"] = test_origins(starts["test"], horizon)
    short = window_shortfall(starts, horizon, settings, task.test_need)
    return (OK, counts, None) if short is None else (COLD_START, counts, short[1])


def _series_report(
    sid: str,
    ids: dict,
    g: pd.DataFrame,
    out: pd.DataFrame,
    rep: ValidationReport,
    status: str,
    counts: dict,
    why: str | None,
) -> dict:
    d = {
        "ids": ids,
        "rows_in": int(len(g)),
        "rows": int(len(out)),
        "start": str(out["timestamp"].iat[0]),
        "end": str(out["timestamp"].iat[-1]),
        "status": status,
        "windows": counts,
        "filled": int(sum(rep.filled.values())),
        "breaks": len(rep.breaks),
        "off_hours_breaks": sum(1 for b in rep.breaks if b.get("off_hours")),
        "duplicates": int(rep.dedupe.get("duplicated_rows", 0)),
        "inserted": rep.inserted_rows,
        "trimmed": rep.trimmed_rows,
        "snapped": int(rep.snapped.get("off_grid", 0)),
    }
    if rep.schedule:
        d["schedule"] = rep.schedule
    if why:
        d["cold_start"] = why
    return d


def _failure(f: RuleFailure, count: int | None = None, examples: list | None = None) -> dict:
    return {
        "rule": f.rule,
        "column": f.column,
        "count": int(f.count if count is None else count),
        "examples": [str(x) for x in (f.examples if examples is None else examples)[:EXAMPLES]],
        "detail": f.detail,
    }


def validate_partitions(task: PartitionTask) -> PartitionResult:
    """Validate the series in `task.row_groups` (see the module's docstring). Pure: reads raw.parquet, writes
    nothing but Data Docs (when `task.docs_dir`); picklable in and out, so any process can run it."""
    t0 = time.perf_counter()
    meta, settings = task.meta, task.settings
    targets = list(meta["targets"])
    cols = targets + list(meta.get("features") or [])
    id_cols = list(meta["panel"]["id_cols"])
    extra = [c for c in id_cols if c != SERIES_ID]
    frame = read_partition(task.path, task.row_groups)
    result = PartitionResult(
        index=task.index,
        rows_in=int(len(frame)),
        frame=frame.iloc[:0],
        series={},
        bad={},
        bad_rows=frame.iloc[:0],
        gx={},
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )
    gx, failed = _suite(task, cols, id_cols, _bounds(meta, settings)).run(frame)
    result.gx = {"partition": task.index, "rows": int(len(frame)), **gx}
    whole = [f for f in failed if f.series is None]  # a rule on the whole table (a column missing, not numeric)
    if whole:  # no series to blame: the dataset fails
        result.failure = _failure(whole[0])
        result.seconds = time.perf_counter() - t0
        return result
    bad = _broken_series(failed, frame)
    kept, ahead = [], []
    for sid, a, b in series_bounds(frame):
        g = frame.iloc[a:b]
        if sid in bad:
            continue
        try:
            out, rep, (status, counts, why) = _cleaned_series(task, sid, g, cols, targets)
        except RuleFailure as f:
            bad[sid] = _failure(f)
            continue
        ids = {c: str(g[c].iat[0]) for c in extra} or {SERIES_ID: sid}
        out = _keyed(out, sid, ids, extra)
        out["timestamp"] = out["timestamp"].astype("datetime64[ns]")
        kept.append(out)
        if meta.get("future_features"):
            ahead.append(_keyed(known_future_rows(g, meta, out["timestamp"].iat[-1]), sid, ids, extra))
        result.series[sid] = _series_report(sid, ids, g, out, rep, status, counts, why)
    if kept:
        result.frame = pd.concat(kept, ignore_index=True)
    if ahead:
        result.future = pd.concat(ahead, ignore_index=True)
    result.bad = bad
    if bad:
        result.bad_rows = frame[frame[SERIES_ID].isin(list(bad))].reset_index(drop=True)
    result.seconds = time.perf_counter() - t0
    return result


def _broken_series(failed: list[RuleFailure], frame: pd.DataFrame) -> dict[str, dict]:
    """series_id -> the rule it broke: the first expectation that found its rows, else rows going back in time."""
    bad: dict[str, dict] = {}
    for f in failed:
        for sid, found in (f.series or {}).items():
            bad.setdefault(sid, _failure(f, found["count"], found["examples"]))
    for sid, n in _unordered(frame).items():
        bad.setdefault(
            sid,
            {
                "rule": "increasing",
                "column": "timestamp",
                "count": n,
                "examples": [f"{n} rows earlier than the row before"],
                "detail": "",
            },
        )
    return bad


def _cleaned_series(
    task: PartitionTask, sid: str, g: pd.DataFrame, cols: list[str], targets: list[str]
) -> tuple[pd.DataFrame, ValidationReport, tuple[str, dict, str | None]]:
    """One series' rows after the gap policy, what the policy did to them, and its window status (_window_status);
    RuleFailure when the series breaks a rule."""
    meta, settings = task.meta, task.settings
    rep = ValidationReport(name=f"{task.name}/{sid}", source=sid, success=False, freq=meta["freq"], rows_in=int(len(g)))
    out = apply_policy(
        g[["timestamp", *cols]].reset_index(drop=True),
        rep,
        cols,
        settings,
        schedule=True,
        hours=as_schedule(meta.get("schedule")),
    )
    return out, rep, _window_status(out, cols, targets, task)


def _keyed(rows: pd.DataFrame, sid: str, ids: dict, extra: list[str]) -> pd.DataFrame:
    """`rows` of series `sid` with its key in front: series_id, then the panel's other id columns."""
    for i, c in enumerate([SERIES_ID, *extra]):
        rows.insert(i, c, sid if c == SERIES_ID else ids[c])
    return rows


def panel_window(meta: dict, settings: Settings) -> tuple[int, int, int]:
    """(lookback, horizon, basis): one lookback + horizon for the whole panel, resolved as for one series of the
    median series length (rows with every value, at ingest), the seasons a lookback spans fitted in the rows of
    every series (the windows the global model is fitted on), an auto horizon no longer than lets the series' test
    splits pool the paths a decision needs (splits.decidable_horizon)."""
    rows = series_rows(meta)
    basis = int(np.median(rows)) if rows else 0
    lookback, horizon = resolve_window(
        settings, meta["freq"], basis, meta.get("schedule"), sum(rows), panel=True, series_rows=rows
    )
    return lookback, horizon, basis


def client_mapper(client) -> Callable:
    """A `mapper` for validate_panel that fans the partitions out over a Dask cluster (a `distributed.Client`; no
    Dask import here): every partition is submitted at once, results come back in partition order, and each is
    released on its worker once read, so this process holds one partition's result at a time."""

    def mapper(fn, tasks):
        futures = client.map(fn, tasks, pure=False)
        for i in range(len(futures)):
            future, futures[i] = futures[i], None
            yield future.result()
            future.release()

    return mapper


def _mapped(mapper: Callable | None, tasks: list[PartitionTask]) -> Iterable[PartitionResult]:
    return map(validate_partitions, tasks) if mapper is None else mapper(validate_partitions, tasks)


def _message(source: str, bad: dict, n_in: int, policy: str) -> str:
    first_sid, f = next(iter(bad.items()))
    what = (
        "too short" if f["rule"] == "too_short" else f"column '{f['column']}': {f['rule']} failed for {f['count']} rows"
    )
    eg = f" ({f['examples'][0]})" if f["examples"] else ""
    others = list(bad.items())[1 : 1 + _SHOWN]
    more = "; also " + ", ".join(f"'{s}' ({x['rule']})" for s, x in others) if others else ""
    more += f" and {len(bad) - 1 - len(others)} more" if len(bad) - 1 > len(others) else ""
    rule = REMEDY.get(f["rule"], "")
    rule = f"{rule}; " if rule else ""
    if f["rule"] == "too_short":
        rule = "shorten window.lookback / window.horizon in params.yaml, or supply more rows; "
    if policy == "reject":
        remedy = (
            f"{rule}or set ingest.bad_series: drop in params.yaml (or pass --bad-series drop) to keep the other "
            f"series and quarantine these"
        )
    else:
        remedy = f"no series is left: {rule}or fix them at the source"
    return f"{source}: {len(bad)} of {n_in} series broke a rule: series '{first_sid}': {what}{eg}{more}; {remedy}"


def _quarantine(settings: Settings, meta: dict, rows: list[pd.DataFrame], report: dict) -> str:
    q = quarantine_dir(settings)
    rows_file, meta_file, report_file = quarantined_files(q)
    if rows:
        pd.concat(rows, ignore_index=True).to_parquet(rows_file, index=False)
    write_json(meta_file, meta)
    write_json(report_file, {"stage": "validate", **report})
    return str(q)


def panel_report(
    series_in: int, kept: dict, bad: dict, policy: str, window: dict, basis: int, partitions: list[dict]
) -> dict:
    """validated.json `panel` (and the report's): counts, the window the statuses were judged on (lookback, horizon,
    test_horizons, test_need: panel_test_rule), each series."""
    cold = [s for s, r in kept.items() if r["status"] == COLD_START]
    return {
        "series_in": series_in,
        "kept": len(kept),
        "cold_start": len(cold),
        "dropped": len(bad) if policy == "drop" else 0,
        "bad": len(bad),
        "bad_series": policy,
        "filled": sum(r["filled"] for r in kept.values()),
        "breaks": sum(r["breaks"] for r in kept.values()),
        "window": {**window, "median_series_rows": basis},
        "series": kept,
        "dropped_series": bad,
        "partitions": partitions,
    }


def validate_panel(settings: Settings, meta: dict, mapper: Callable | None = None) -> ValidationReport:
    """data/NAME/raw.parquet (a panel) -> validated.parquet + validated.json, reports/NAME/validation.json (+ Data
    Docs when validated in this process). `mapper(fn, tasks)` runs validate_partitions over the partitions
    (default: here, one after another); results must come back in task order."""
    name = settings.dataset
    t0 = datetime.now(UTC)
    raw_pq, _ = raw_paths(settings)
    source = str(raw_pq)
    lookback, horizon, basis = panel_window(meta, settings)
    rule = panel_test_rule(meta, settings, lookback, horizon)
    docs = _fresh_data_docs(data_docs_dir(settings), mapper)
    tasks = _partition_tasks(settings, meta, raw_pq, (lookback, horizon), docs, rule)
    policy = settings.ingest.bad_series
    rep = ValidationReport(
        name=name,
        source=source,
        success=False,
        freq=meta["freq"],
        rows_in=int(meta["rows"]),
        policy=settings.ingest.model_dump(),
        bounds=_bounds(meta, settings),
    )
    rep.bounds_source = {c: "params" for c in rep.bounds}
    pq_out, js_out = validated_paths(settings)
    got = _write_partitions(pq_out, mapper, tasks, rep, policy)
    rep.gx = _gx_summary(got.parts)
    rep.failures = _failures(got.failure, got.bad)
    rep.windows = {"lookback": lookback, "horizon": horizon}
    rep.panel = panel_report(
        got.series_in, got.kept, got.bad, policy, {"lookback": lookback, "horizon": horizon, **rule}, basis, got.parts
    )
    if got.kept and rep.panel["cold_start"] == len(got.kept):  # valid data, but no model can be fitted on it
        rep.panel["remedy"] = panel_remedy(settings, series_rows(meta), lookback, horizon)
    rep.data_docs = str(data_docs_dir(settings) / "index.html") if docs else None
    rep.report_path = str(validation_report_path(settings))
    refused = got.refused(policy)
    if refused:
        rep.error = _refusal(source, name, got, policy)
    if got.bad or got.failure is not None:
        rep.quarantine_path = _quarantine(settings, meta, got.bad_rows if got.failure is None else [], rep.to_dict())
        if got.failure is not None:
            shutil.copy2(raw_pq, quarantined_files(Path(rep.quarantine_path))[0])
    rep.seconds = (datetime.now(UTC) - t0).total_seconds()
    if refused:
        write_json(Path(rep.report_path), rep.to_dict())
        raise DataValidationError(
            rep.error or f"{name}: validation failed", report_path=rep.report_path, quarantine_path=rep.quarantine_path
        )
    rep.success = True
    write_json(Path(rep.report_path), rep.to_dict())
    _write_validated_meta(settings, meta, rep, got, js_out, pq_out)
    return rep


def _fresh_data_docs(docs_dir: Path, mapper: Callable | None) -> str | None:
    """Where this run's Data Docs go (validated in this process), or None (mapped elsewhere): no Data Docs of an older
    run are left beside this run's report."""
    if mapper is None:
        _SUITES.clear()  # this run's Data Docs start afresh
    if mapper is not None and docs_dir.exists():
        shutil.rmtree(docs_dir)  # no Data Docs of an older run beside this run's report
    return str(docs_dir.resolve()) if mapper is None else None


def _partition_tasks(
    settings: Settings, meta: dict, raw_pq: Path, window: tuple[int, int], docs: str | None, rule: dict
) -> list[PartitionTask]:
    """One validation task per row group of raw.parquet (each holds whole series)."""
    lookback, horizon = window
    return [
        PartitionTask(
            name=settings.dataset,
            path=str(raw_pq.resolve()),
            row_groups=[i],
            meta=meta,
            settings=settings,
            lookback=lookback,
            horizon=horizon,
            index=i,
            docs_dir=docs,
            test_horizons=rule["test_horizons"],
            test_need=rule["test_need"],
        )
        for i in range(panel_partitions(raw_pq))
    ]


@dataclass
class _Partitions:
    """What the partitions' validation gave: the kept and the bad series, the bad series' rows, a line per partition,
    and the first failure of a whole partition (a column missing or of the wrong type)."""

    kept: dict[str, dict] = field(default_factory=dict)
    bad: dict[str, dict] = field(default_factory=dict)
    bad_rows: list[pd.DataFrame] = field(default_factory=list)
    parts: list[dict] = field(default_factory=list)
    failure: dict | None = None
    future: list[pd.DataFrame] = field(default_factory=list)  # a few rows per series: kept here and written once

    @property
    def series_in(self) -> int:
        return len(self.kept) + len(self.bad)

    def refused(self, policy: str) -> bool:
        return bool(self.failure is not None or (self.bad and policy == "reject") or not self.kept)


def _write_partitions(
    pq_out: Path, mapper: Callable | None, tasks: list[PartitionTask], rep: ValidationReport, policy: str
) -> _Partitions:
    """Validates the partitions (through `mapper`) and writes the kept rows to validated.parquet, partition by
    partition; a refused panel publishes no validated.parquet."""
    got = _Partitions()
    try:
        with parquet_groups(pq_out) as add:
            for res in _mapped(mapper, tasks):
                got.parts.append(
                    {
                        "partition": res.index,
                        "rows_in": res.rows_in,
                        "series": len(res.series) + len(res.bad),
                        "worker": res.worker,
                        "seconds": round(res.seconds, 3),
                        "gx": res.gx,
                    }
                )
                if res.failure is not None:
                    got.failure = got.failure or res.failure
                    continue
                got.kept.update(res.series)
                got.bad.update(res.bad)
                if len(res.bad_rows):
                    got.bad_rows.append(res.bad_rows)
                if res.future is not None and len(res.future):
                    got.future.append(res.future)
                if len(res.frame):
                    add(res.frame)
                    rep.rows_out += int(len(res.frame))
            if got.refused(policy):
                raise _Refused()
    except _Refused:
        pass
    return got


def _gx_summary(parts: list[dict]) -> dict:
    """The GX suite's result over every partition."""
    return {
        "success": all(p["gx"].get("success") for p in parts),
        "evaluated": sum(p["gx"].get("evaluated", 0) for p in parts),
        "partitions": len(parts),
    }


def _failures(failure: dict | None, bad: dict[str, dict]) -> list[dict]:
    """The report's failures: a whole partition's (if any), then each bad series' broken rule."""
    whole = (
        [
            {
                "column": failure["column"],
                "rule": failure["rule"],
                "unexpected_count": failure["count"],
                "examples": failure["examples"],
            }
        ]
        if failure
        else []
    )
    return whole + [
        {
            "series": s,
            "column": f["column"],
            "rule": f["rule"],
            "unexpected_count": f["count"],
            "examples": f["examples"],
        }
        for s, f in bad.items()
    ]


def _refusal(source: str, name: str, got: _Partitions, policy: str) -> str:
    """The one line a refused panel is refused with."""
    failure = got.failure
    if failure is not None:
        what = f"column '{failure['column']}': {failure['rule']} failed for {failure['count']} rows"
        return f"{source}: {what}; re-ingest the file with --target / --features / --id-col naming its columns"
    if not got.bad:
        return f"{source}: no series to validate (0 rows in {len(got.parts)} partitions); ingest the file again"
    return _message(source, got.bad, got.series_in, policy).replace(
        "cellcast validate NAME", f"cellcast validate {name}"
    )


def _write_validated_meta(
    settings: Settings, meta: dict, rep: ValidationReport, got: _Partitions, js_out: Path, pq_out: Path
) -> None:
    """validated.json of an accepted panel, and its future.parquet (each kept series' rows after its last one)."""
    first = min(r["start"] for r in got.kept.values())
    last = max(r["end"] for r in got.kept.values())
    panel = {
        "id_cols": meta["panel"]["id_cols"],
        "row_groups": len(got.parts),
        **{k: v for k, v in (rep.panel or {}).items() if k != "partitions"},
        "quarantine": rep.quarantine_path,
    }
    write_json(
        js_out,
        {
            **{k: v for k, v in meta.items() if k != "panel"},
            "rows": rep.rows_out,
            "start": first,
            "end": last,
            "bounds": rep.bounds,
            "validated_at": datetime.now(UTC).isoformat(),
            "panel": panel,
            "report": {k: v for k, v in rep.to_dict().items() if k != "panel"},
            "data_md5": md5_file(pq_out),
        },
    )
    write_parquet(_future_frame(got.future, meta), future_path(settings))


def _future_frame(parts: list[pd.DataFrame], meta: dict) -> pd.DataFrame:
    """future.parquet of a panel: each kept series' rows after its last observation, keyed by series_id and the id
    columns (what the batch forecast reads per series); with none, an empty file of those columns (a stage output)."""
    if parts:
        return pd.concat(parts, ignore_index=True)
    ids = [SERIES_ID, *(c for c in meta["panel"]["id_cols"] if c != SERIES_ID)]
    empty = {**{c: "str" for c in ids}, "timestamp": "datetime64[ns]"}
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in empty.items()}).assign(
        **{c: pd.Series(dtype="float64") for c in meta.get("future_features") or []}
    )


class _Refused(Exception):
    """Leaves the writer's block so that no validated.parquet is published."""
