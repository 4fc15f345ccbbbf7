"""Data validation (the only module that imports great_expectations) and the missing/gap/duplicate policy.

`validate_frame` checks a canonical frame against a suite built from its declared schema (Great
Expectations 1.x), then applies the policy of `settings.ingest`:
  duplicated timestamps  reject | first | last | mean
  clock drift            timestamps snapped to the nearest point of the regular grid
  gaps and NaN cells     runs up to `max_fill_steps` interpolated linearly (the grid is regular, so
                         this is time-wise); longer runs: reject, or segment (kept as NaN rows that
                         mark a break: no window crosses them)
and finally checks that enough windows remain in each split. `validate_dataset` runs it on
data/NAME/raw.parquet and writes validated.parquet/.json, reports/NAME/validation.json and Data Docs.
Any failure raises DataValidationError with one line, keeps the report and Data Docs, and puts a copy of
the rejected data with its report in quarantine/NAME-<stamp>/. The input is only read.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Settings
from ..errors import DataValidationError
from .ingest import grid_positions, quarantine_dir, raw_paths, read_raw
from .window import complete_windows, resolve_window, split_bounds, window_starts

__all__ = ["ValidationReport", "validate_frame", "validate_dataset", "resolve_window", "profile_bounds",
           "min_rows_for_windows", "validated_paths", "read_validated"]

_NUMERIC = ["float64", "float32", "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64",
            "Float64", "Int64"]
_FINITE = float(np.finfo(np.float64).max)
_EXAMPLES = 5


@dataclass
class ValidationReport:
    name: str
    source: str
    success: bool
    freq: str
    rows_in: int
    rows_out: int = 0
    policy: dict = field(default_factory=dict)       # the settings.ingest used
    dedupe: dict = field(default_factory=dict)       # {mode, duplicated_rows, timestamps}
    snapped: dict = field(default_factory=dict)      # {off_grid, merged}
    inserted_rows: int = 0                           # grid points missing from the input
    trimmed_rows: int = 0                            # leading/trailing rows that could not be filled
    filled: dict = field(default_factory=dict)       # column -> points interpolated
    dropped: dict = field(default_factory=dict)      # column -> points blanked by a break (segment)
    breaks: list = field(default_factory=list)       # [{start, end, steps}]
    long_runs: list = field(default_factory=list)    # runs longer than max_fill_steps
    bounds: dict = field(default_factory=dict)       # column -> [lo, hi]
    bounds_source: dict = field(default_factory=dict)
    windows: dict = field(default_factory=dict)      # {lookback, horizon, train, val, test}
    gx: dict = field(default_factory=dict)           # {success, evaluated, failed: [...]}
    failures: list = field(default_factory=list)     # every failed rule: {column, rule, unexpected_count, examples}
    error: str | None = None
    data_docs: str | None = None
    report_path: str | None = None
    quarantine_path: str | None = None
    seconds: float = 0.0
    frame: pd.DataFrame | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """The report as JSON-ready data (the frame is not part of it)."""
        d = {k: v for k, v in self.__dict__.items() if k != "frame"}
        return json.loads(json.dumps(d, default=str))


class _Failed(Exception):
    def __init__(self, column: str, rule: str, count: int, examples: list, detail: str = ""):
        super().__init__(rule)
        self.column, self.rule, self.count, self.examples, self.detail = column, rule, count, examples, detail

    def as_dict(self) -> dict:
        return {"column": self.column, "rule": self.rule, "unexpected_count": self.count,
                "examples": [str(x) for x in self.examples[:_EXAMPLES]], "detail": self.detail}


# ---------------------------------------------------------------- pure helpers

def profile_bounds(df: pd.DataFrame, columns: list[str], tolerance: float) -> dict[str, list[float]]:
    """[min - t*range, max + t*range] of each column's finite values (a constant column gets +-t*|value| or +-t)."""
    out = {}
    for c in columns:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype="float64")
        v = v[np.isfinite(v)]
        if not len(v):
            continue
        lo, hi = float(v.min()), float(v.max())
        span = (hi - lo) or (abs(hi) or 1.0)
        out[c] = [lo - tolerance * span, hi + tolerance * span]
    return out


def min_rows_for_windows(settings: Settings, lookback: int, horizon: int) -> int:
    """The fewest rows (with no breaks) that give `min_windows` windows in each of train/val/test."""
    w, need = settings.window, settings.ingest.min_windows

    def ok(n: int) -> bool:
        v, t = split_bounds(n, w.val_fraction, w.test_fraction)
        return all(len(s) >= need for s in window_starts(n, lookback, horizon, v, t, w.stride).values())

    lo, hi = lookback + horizon, lookback + horizon
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > 10 ** 9:
            return hi
    while lo < hi:  # close enough to monotonic: the exact check runs after the policy anyway
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return hi


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _dedupe(df: pd.DataFrame, mode: str, cols: list[str]) -> tuple[pd.DataFrame, dict]:
    dup = df["timestamp"].duplicated(keep=False)
    info = {"mode": mode, "duplicated_rows": int(df["timestamp"].duplicated().sum()),
            "timestamps": int(df.loc[dup, "timestamp"].nunique())}
    if not info["duplicated_rows"]:
        return df, info
    g = df.groupby("timestamp", sort=True)[cols]
    # first/last of the rows as they came (NaN cells kept), mean of the values present
    out = {"first": lambda: g.nth(0).set_index(df.loc[~df["timestamp"].duplicated(), "timestamp"]),
           "last": lambda: g.nth(-1).set_index(df.loc[~df["timestamp"].duplicated(keep="last"), "timestamp"]),
           "mean": lambda: g.mean()}[mode]()
    return out.sort_index().rename_axis("timestamp").reset_index(), info


def _regularise(df: pd.DataFrame, freq: str, cols: list[str]) -> tuple[pd.DataFrame, dict, np.ndarray]:
    """Snap to the grid (merging collisions by mean) and reindex: returns the frame, counts, inserted-row mask."""
    grid, pos, off_grid = grid_positions(df["timestamp"], freq)
    merged = 0
    vals = df[cols].copy()
    vals.index = pos
    if off_grid:
        merged = int(pd.Index(pos).duplicated().sum())
        vals = vals.groupby(level=0).mean() if merged else vals
    lo, hi = int(vals.index.min()), int(vals.index.max())
    full = vals.reindex(np.arange(lo, hi + 1))
    inserted = ~np.isin(full.index.to_numpy(), vals.index.to_numpy())
    full.insert(0, "timestamp", grid[lo:hi + 1])
    return full.reset_index(drop=True), {"off_grid": off_grid, "merged": merged}, inserted


# ---------------------------------------------------------------- GX

def _gx_suite(gx, cols: list[str], dedupe: str, bounds: dict, min_rows: int | None):
    E = gx.expectations
    ex = [E.ExpectColumnToExist(column="timestamp", meta={"rule": "exists"}),
          E.ExpectColumnValuesToNotBeNull(column="timestamp", meta={"rule": "not_null"})]
    if dedupe == "reject":
        ex.append(E.ExpectColumnValuesToBeUnique(column="timestamp", meta={"rule": "unique"}))
    ex.append(E.ExpectColumnValuesToBeIncreasing(column="timestamp", strictly=dedupe == "reject",
                                                 meta={"rule": "increasing"}))
    for c in cols:
        ex += [E.ExpectColumnToExist(column=c, meta={"rule": "exists"}),
               E.ExpectColumnValuesToBeInTypeList(column=c, type_list=_NUMERIC, meta={"rule": "numeric"}),
               # GX has no 'finite' expectation: inf lies outside the largest finite float
               E.ExpectColumnValuesToBeBetween(column=c, min_value=-_FINITE, max_value=_FINITE,
                                               meta={"rule": "finite"})]
        if c in bounds:
            ex.append(E.ExpectColumnValuesToBeBetween(column=c, min_value=bounds[c][0], max_value=bounds[c][1],
                                                      meta={"rule": "in_range"}))
    if min_rows:
        ex.append(E.ExpectTableRowCountToBeBetween(min_value=min_rows, meta={"rule": "min_rows"}))
    return ex


def _run_gx(df: pd.DataFrame, name: str, cols: list[str], dedupe: str, bounds: dict, min_rows: int | None,
            docs_dir: Path | None) -> tuple[dict, list[_Failed], str | None]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx  # slow (4-9 s): only when validating
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (ctx.data_sources.add_pandas(f"{name}-source").add_dataframe_asset(name)
             .add_batch_definition_whole_dataframe("whole"))
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"{name}-schema"))
    for e in _gx_suite(gx, cols, dedupe, bounds, min_rows):
        suite.add_expectation(e)
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{name}-validation", data=batch, suite=suite))
    actions, index = [], None
    if docs_dir is not None:
        if docs_dir.exists():
            shutil.rmtree(docs_dir)  # our own output: one run's docs, not an accumulating history
        ctx.add_data_docs_site(site_name="cellcast", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
        actions = [gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["cellcast"])]
    cp = ctx.checkpoints.add(gx.Checkpoint(name=f"{name}-checkpoint", validation_definitions=[vd], actions=actions,
                                           result_format="SUMMARY"))
    res = cp.run(batch_parameters={"dataframe": df})
    vr = next(iter(res.run_results.values()))
    failed, rows = [], []
    for r in vr.results:
        cfg = r.expectation_config
        col = cfg.kwargs.get("column") or "timestamp"
        rule = (cfg.meta or {}).get("rule", cfg.type)
        result = r.result or {}
        row = {"expectation": cfg.type, "column": col, "rule": rule, "success": bool(r.success),
               "unexpected_count": result.get("unexpected_count"),
               "observed_value": None if result.get("observed_value") is None else str(result["observed_value"]),
               "examples": [str(x) for x in (result.get("partial_unexpected_list") or [])[:_EXAMPLES]]}
        if r.exception_info and r.exception_info.get("raised_exception"):
            row["exception"] = str(r.exception_info.get("exception_message"))[:300]
        rows.append(row)
        if not r.success:
            count = result.get("unexpected_count")
            if count is None:  # table-level rules (row count) and errors
                count = len(df)
            examples = row["examples"] or ([row["observed_value"]] if row["observed_value"] else [])
            if rule == "min_rows":
                examples = [f"{len(df)} rows, need at least {min_rows} for one train, validation and test window each"]
            failed.append(_Failed(col, rule, int(count), examples))
    if docs_dir is not None:
        index = str(docs_dir / "index.html")
    return {"success": bool(vr.success), "evaluated": len(rows), "results": rows}, failed, index


# ---------------------------------------------------------------- the policy

def _apply_policy(df: pd.DataFrame, rep: ValidationReport, cols: list[str], settings: Settings) -> pd.DataFrame:
    pol = settings.ingest
    df = df.sort_values("timestamp", kind="stable", ignore_index=True)
    df, rep.dedupe = _dedupe(df, pol.dedupe, cols)
    df, rep.snapped, inserted = _regularise(df, rep.freq, cols)
    rep.inserted_rows = int(inserted.sum())

    # leading/trailing rows with a missing value cannot be interpolated: trim them
    complete = df[cols].notna().all(axis=1).to_numpy()
    if not complete.any():
        raise _Failed(cols[0], "not_null", len(df), [], "no row has every value")
    first, last = int(np.argmax(complete)), len(complete) - int(np.argmax(complete[::-1]))
    rep.trimmed_rows = int(len(df) - (last - first))
    df, inserted = df.iloc[first:last].reset_index(drop=True), inserted[first:last]

    k = pol.max_fill_steps
    ts = df["timestamp"]
    long_rows = np.zeros(len(df), dtype=bool)
    for c in cols:
        miss = df[c].isna().to_numpy()
        if not miss.any():
            continue
        runs = _runs(miss)
        short = np.zeros(len(df), dtype=bool)
        for a, b in runs:
            if b - a <= k:
                short[a:b] = True
            else:
                # a run made only of missing grid points is a gap in time; otherwise the column's cells are empty
                rep.long_runs.append({"column": "timestamp" if inserted[a:b].all() else c, "value_column": c,
                                      "start": str(ts.iloc[a]), "end": str(ts.iloc[b - 1]), "steps": b - a})
                long_rows[a:b] = True
        if short.any():
            filled = df[c].interpolate(method="linear", limit_area="inside")
            df.loc[short, c] = filled[short]
            rep.filled[c] = int(short.sum())

    if rep.long_runs:
        worst = max(rep.long_runs, key=lambda r: r["steps"])
        n = len({(r["start"], r["end"]) for r in rep.long_runs})
        if pol.long_gaps == "reject":
            raise _Failed(worst["column"], "long_gap", n,
                          [f"{worst['steps']} missing steps from {worst['start']} to {worst['end']}"],
                          f"runs longer than max_fill_steps={k}: {n}")
        # segment: the whole row becomes a break, so no window reads half a row
        for c in cols:
            blank = long_rows & df[c].notna().to_numpy()
            if blank.any():
                rep.dropped[c] = int(blank.sum())
        df.loc[long_rows, cols] = np.nan
        rep.breaks = [{"start": str(ts.iloc[a]), "end": str(ts.iloc[b - 1]), "steps": b - a}
                      for a, b in _runs(long_rows)]
    return df


def _check_windows(df: pd.DataFrame, rep: ValidationReport, cols: list[str], settings: Settings) -> None:
    lookback, horizon = resolve_window(settings, rep.freq, len(df))
    w = settings.window
    n = len(df)
    v, t = split_bounds(n, w.val_fraction, w.test_fraction)
    valid = complete_windows(df[cols].to_numpy(dtype="float64"), lookback + horizon)
    starts = window_starts(n, lookback, horizon, v, t, w.stride, valid)
    rep.windows = {"lookback": lookback, "horizon": horizon, **{k: int(len(s)) for k, s in starts.items()}}
    need = settings.ingest.min_windows
    short = [(k, len(s)) for k, s in starts.items() if len(s) < need]
    if short:
        k, got = short[0]
        raise _Failed("timestamp", "min_windows", n,
                      [f"{k} has {got} window(s) of lookback {lookback} + horizon {horizon}, need {need}"])


# ---------------------------------------------------------------- entry points

def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _message(source: str, f: _Failed) -> str:
    if f.rule in ("min_rows", "min_windows"):   # a rule on the whole table, not on a column's values
        return (f"{source}: too short ({f.rule}): {'; '.join(str(x) for x in f.examples[:1])}; "
                f"shorten window.lookback / window.horizon in params.yaml or supply more rows")
    eg = f" (e.g. {', '.join(str(x) for x in f.examples[:3])})" if f.examples else ""
    return f"{source}: column '{f.column}': {f.rule} failed for {f.count} rows{eg}"


def validate_frame(df: pd.DataFrame, meta: dict, settings: Settings, *, name: str, report_dir: str | Path | None = None,
                   bounds: dict[str, list[float]] | None = None, require_windows: bool = True,
                   source: str | None = None, quarantine: bool = True) -> ValidationReport:
    """Validate a canonical frame and apply the policy; `report.frame` is the validated frame.

    `meta` needs targets, features and freq (raw.json has them). `bounds` (e.g. those profiled at
    training time, validated.json `bounds`) win over params and profiling. With `report_dir`, the
    report (validation.json) and Data Docs are written there, on failure too. Raises DataValidationError.
    """
    t0 = datetime.now(timezone.utc)
    cols = list(meta["targets"]) + list(meta.get("features") or [])
    source = source or f"{name} (frame)"
    rep = ValidationReport(name=name, source=source, success=False, freq=meta["freq"], rows_in=int(len(df)),
                           policy=settings.ingest.model_dump())
    report_dir = Path(report_dir) if report_dir is not None else None

    # bounds: explicit > declared in params > profiled from this data
    declared = {c: list(v) for c, v in settings.validate_.bounds.items() if c in cols}
    present = [c for c in cols if c in df.columns]
    profiled = profile_bounds(df, [c for c in present if c not in declared and c not in (bounds or {})],
                              settings.validate_.profile_tolerance)
    rep.bounds = {**profiled, **declared, **{c: list(v) for c, v in (bounds or {}).items() if c in cols}}
    rep.bounds_source = {c: ("given" if c in (bounds or {}) else "params" if c in declared else "profiled")
                         for c in rep.bounds}

    min_rows = None
    if require_windows:
        lookback, horizon = resolve_window(settings, rep.freq, len(df))
        min_rows = min_rows_for_windows(settings, lookback, horizon)
    docs = report_dir / "data_docs" if report_dir is not None else None
    rep.gx, failed, rep.data_docs = _run_gx(df, name, cols, settings.ingest.dedupe, rep.bounds, min_rows, docs)
    rep.failures = [f.as_dict() for f in failed]
    try:
        if failed:
            raise failed[0]
        out = _apply_policy(df[["timestamp", *cols]], rep, cols, settings)
        if require_windows:
            _check_windows(out, rep, cols, settings)
    except _Failed as f:
        if f.as_dict() not in rep.failures:
            rep.failures.append(f.as_dict())
        rep.error = _message(source, f)
        rep.seconds = (datetime.now(timezone.utc) - t0).total_seconds()
        _fail(rep, df, meta, settings, report_dir, quarantine)
    rep.success, rep.rows_out, rep.frame = True, int(len(out)), out
    rep.seconds = (datetime.now(timezone.utc) - t0).total_seconds()
    if report_dir is not None:
        rep.report_path = str(report_dir / "validation.json")
        _write_json(Path(rep.report_path), rep.to_dict())
    return rep


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def _fail(rep: ValidationReport, df: pd.DataFrame, meta: dict, settings: Settings, report_dir: Path | None,
          quarantine: bool) -> None:
    if report_dir is not None:
        rep.report_path = str(report_dir / "validation.json")
    if quarantine:
        q = quarantine_dir(rep.name, settings)
        rep.quarantine_path = str(q)
        df.to_parquet(q / "data.parquet", index=False)
        _write_json(q / "meta.json", meta)
        _write_json(q / "report.json", {"stage": "validate", **rep.to_dict()})
    if report_dir is not None:
        _write_json(Path(rep.report_path), rep.to_dict())
    raise DataValidationError(rep.error, report_path=rep.report_path, quarantine_path=rep.quarantine_path)


def validated_paths(name: str, settings: Settings) -> tuple[Path, Path]:
    d = Path(settings.paths.data) / name
    return d / "validated.parquet", d / "validated.json"


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validate_dataset(name: str, settings: Settings) -> ValidationReport:
    """data/NAME/raw.parquet -> data/NAME/validated.parquet + validated.json, reports/NAME/validation.json + Data Docs."""
    df, meta = read_raw(name, settings)
    pq_in, _ = raw_paths(name, settings)
    rep = validate_frame(df, meta, settings, name=name, report_dir=Path(settings.paths.reports) / name,
                         source=str(pq_in))
    pq, js = validated_paths(name, settings)
    pq.parent.mkdir(parents=True, exist_ok=True)
    tmp = pq.with_name(pq.name + ".tmp")
    rep.frame.to_parquet(tmp, index=False)
    os.replace(tmp, pq)
    _write_json(js, {**meta, "rows": rep.rows_out, "start": str(rep.frame["timestamp"].iloc[0]),
                     "end": str(rep.frame["timestamp"].iloc[-1]), "bounds": rep.bounds, "validated_at": _now(),
                     "report": rep.to_dict(), "data_md5": _md5(pq)})
    return rep


def read_validated(name: str, settings: Settings) -> tuple[pd.DataFrame, dict]:
    from ..errors import NotFoundError
    pq, js = validated_paths(name, settings)
    if not pq.is_file() or not js.is_file():
        raise NotFoundError(f"{pq}: dataset '{name}' is not validated; run `cellcast validate {name}` first")
    return pd.read_parquet(pq), json.loads(js.read_text())
