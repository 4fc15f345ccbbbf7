"""Data validation: a canonical frame checked and cleaned, with its report.

`validate_frame` checks a canonical frame against a suite built from its declared schema (Great
Expectations 1.x, in expectations.py), then applies the policy of `settings.ingest` (cleaning.py),
and finally checks that enough windows remain in each split. `validate_dataset` runs it on
data/NAME/raw.parquet and writes validated.parquet/.json, reports/NAME/validation.json and Data Docs.
Any failure raises DataValidationError with one line, keeps the report and Data Docs, and puts a copy of
the rejected data with its report in quarantine/NAME-<stamp>/. The input is only read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ..catalog import (
    data_docs_dir,
    future_path,
    is_panel,
    policy_path,
    quarantine_dir,
    quarantined_files,
    raw_paths,
    read_raw,
    read_raw_meta,
    validated_paths,
    validation_report_path,
)
from ..config import Settings
from ..errors import DataValidationError
from ..files import md5_file, write_json, write_parquet
from .cleaning import apply_policy, known_future_rows
from .expectations import run_suite
from .findings import REMEDY, RuleFailure, ValidationReport
from .panel_validation import validate_panel
from .schedule import as_schedule
from .splits import (
    filled_mask,
    profile_bounds,
    resolve_window,
    split_for,
    test_origins,
    usable_windows,
    window_shortfall,
    window_starts,
)

__all__ = ["ValidationReport", "validate_frame", "validate_dataset", "profile_bounds", "min_rows_for_windows"]


def min_rows_for_windows(settings: Settings, lookback: int, horizon: int) -> int:
    """The fewest rows (with no breaks) that give `min_windows` windows in each of train/val/test and
    `min_test_horizons` non-overlapping test windows."""
    w = settings.window

    def ok(n: int) -> bool:
        v, t = split_for(n, horizon, settings)
        return window_shortfall(window_starts(n, lookback, horizon, v, t, w.stride), horizon, settings) is None

    lo, hi = lookback + horizon, lookback + horizon
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > 10**9:
            return hi
    while lo < hi:  # close enough to monotonic: the exact check runs after the policy anyway
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return hi


def _check_windows(
    df: pd.DataFrame,
    rep: ValidationReport,
    cols: list[str],
    targets: list[str],
    settings: Settings,
    schedule: dict | None = None,
) -> None:
    lookback, horizon = resolve_window(settings, rep.freq, len(df), schedule)
    w = settings.window
    n = len(df)
    v, t = split_for(n, horizon, settings)
    # the windows the window stage will cut: no break crossed, no filled origin, an observed target
    valid = usable_windows(
        df[cols].to_numpy(dtype="float64"), filled_mask(df, cols), lookback, horizon, [cols.index(c) for c in targets]
    )
    starts = window_starts(n, lookback, horizon, v, t, w.stride, valid)
    rep.windows = {
        "lookback": lookback,
        "horizon": horizon,
        **{k: int(len(s)) for k, s in starts.items()},
        "test_origins": test_origins(starts["test"], horizon),
    }
    short = window_shortfall(starts, horizon, settings)
    if short:
        rule, what = short
        raise RuleFailure("timestamp", rule, n, [f"{n} rows leave {what}"])


# ---------------------------------------------------------------- entry points


def _now() -> str:
    return datetime.now(UTC).isoformat()


_TOO_SHORT = ("min_rows", "min_windows", "min_test_horizons")  # rules on the whole table, not on a column's values

_REMEDY = REMEDY  # what to do about each broken rule: every refusal names its remedy
_MODEL_RANGE = (
    "check the data; if such values are real now, widen validate.profile_tolerance (or declare "
    "validate.bounds) in params.yaml and retrain"
)


def _message(source: str, f: RuleFailure, rep: ValidationReport | None = None, bounds_origin: str | None = None) -> str:
    if f.rule in _TOO_SHORT:
        what = "; ".join(str(x) for x in f.examples[:1]) + (f" {f.detail}" if f.detail else "")
        return (
            f"{source}: too short ({f.rule}): {what}: supply more rows, or shorten window.lookback / "
            f"window.horizon or lower ingest.min_windows / ingest.min_test_horizons in params.yaml"
        )
    shown = list(dict.fromkeys(str(x) for x in f.examples))[:3]  # distinct examples
    eg = f" (e.g. {', '.join(shown)})" if shown else ""
    remedy = _REMEDY.get(f.rule, "fix the data at the source")
    if f.rule == "in_range" and rep is not None and f.column in rep.bounds:
        lo, hi = rep.bounds[f.column]
        given = rep.bounds_source.get(f.column) == "given"
        eg += (
            f": outside [{lo:.6g}, {hi:.6g}] ({bounds_origin or 'given'})"
            if given
            else f": outside [{lo:.6g}, {hi:.6g}] (validate.bounds)"
        )
        remedy = _MODEL_RANGE if given else remedy
    return f"{source}: column '{f.column}': {f.rule} failed for {f.count} rows{eg}; {remedy}"


def validate_frame(
    df: pd.DataFrame,
    meta: dict,
    settings: Settings,
    *,
    write_report: bool = False,
    bounds: dict[str, list[float]] | None = None,
    bounds_origin: str | None = None,
    require_windows: bool = True,
    source: str | None = None,
    quarantine: bool = True,
) -> ValidationReport:
    """Validate a canonical frame and apply the policy; `report.frame` is the validated frame.

    `meta` needs targets, features and freq (raw.json has them). Values are checked against the ranges
    declared in params.yaml (validate.bounds) and `bounds` (a model's, profiled on its training rows:
    ONNX metadata `bounds`), which win; `bounds_origin` says whose they are in a refusal. Nothing is
    profiled from the frame itself: a range drawn from the values it judges could never fail. With
    `write_report`, the report (reports/NAME/validation.json) and Data Docs are written, on failure too. Raises
    DataValidationError.
    """
    name = settings.dataset
    t0 = datetime.now(UTC)
    cols = list(meta["targets"]) + list(meta.get("features") or [])
    source = source or f"{name} (frame)"
    rep = ValidationReport(
        name=name,
        source=source,
        success=False,
        freq=meta["freq"],
        rows_in=int(len(df)),
        policy=settings.ingest.model_dump(),
    )

    # bounds: given (a model's) > declared in params
    declared = {c: list(v) for c, v in settings.validate_.bounds.items() if c in cols}
    rep.bounds = {**declared, **{c: list(v) for c, v in (bounds or {}).items() if c in cols}}
    rep.bounds_source = {c: ("given" if c in (bounds or {}) else "params") for c in rep.bounds}

    min_rows = None
    if require_windows:
        lookback, horizon = resolve_window(settings, rep.freq, len(df), meta.get("schedule"))
        min_rows = min_rows_for_windows(settings, lookback, horizon)
    docs = data_docs_dir(settings) if write_report else None
    rep.gx, failed, rep.data_docs = run_suite(df, name, cols, settings.ingest.dedupe, rep.bounds, min_rows, docs)
    for f in failed:
        if f.rule == "min_rows":  # what the row count is for
            i, w = settings.ingest, settings.window
            f.detail = (
                f"for lookback {lookback}, horizon {horizon} and test_fraction {w.test_fraction:g} "
                f"({i.min_windows} window(s) per split, {i.min_test_horizons} non-overlapping test windows)"
            )
    rep.failures = [f.as_dict() for f in failed]
    try:
        if failed:
            raise failed[0]
        out = apply_policy(df[["timestamp", *cols]], rep, cols, settings, hours=as_schedule(meta.get("schedule")))
        if require_windows:
            _check_windows(out, rep, cols, list(meta["targets"]), settings, meta.get("schedule"))
    except RuleFailure as f:
        if f.as_dict() not in rep.failures:
            rep.failures.append(f.as_dict())
        rep.error = _message(source, f, rep, bounds_origin).replace(
            "cellcast validate NAME", f"cellcast validate {name}"
        )
        rep.seconds = (datetime.now(UTC) - t0).total_seconds()
        _fail(rep, df, meta, settings, write_report, quarantine)
    rep.success, rep.rows_out, rep.frame = True, int(len(out)), out
    rep.seconds = (datetime.now(UTC) - t0).total_seconds()
    if write_report:
        rep.report_path = str(validation_report_path(settings))
        write_json(Path(rep.report_path), rep.to_dict())
    return rep


def _fail(
    rep: ValidationReport, df: pd.DataFrame, meta: dict, settings: Settings, write_report: bool, quarantine: bool
) -> None:
    if write_report:
        rep.report_path = str(validation_report_path(settings))
    if quarantine:
        q = quarantine_dir(settings)
        rep.quarantine_path = str(q)
        rows, meta_file, report_file = quarantined_files(q)
        df.to_parquet(rows, index=False)
        write_json(meta_file, meta)
        write_json(report_file, {"stage": "validate", **rep.to_dict()})
    if write_report:
        write_json(validation_report_path(settings), rep.to_dict())
    raise DataValidationError(
        rep.error or f"{rep.name}: validation failed", report_path=rep.report_path, quarantine_path=rep.quarantine_path
    )


POLICY_KEYS = ("dedupe", "long_gaps", "bad_series")  # the ingest settings `cellcast validate` takes as options


def record_policy(settings: Settings, policy: dict) -> None:
    """Keep the policy given for NAME on the command line (data/NAME/policy.json, merged with what was given before):
    every later validation of NAME applies it over params.yaml (with_recorded_policy)."""
    unknown = sorted(set(policy) - set(POLICY_KEYS))
    if unknown:
        raise ValueError(f"not a validation policy: {unknown}")
    path = policy_path(settings)
    before = json.loads(path.read_text()) if path.is_file() else {}
    write_json(path, {**before, **policy})


def recorded_policy(settings: Settings) -> dict:
    path = policy_path(settings)
    return {k: v for k, v in json.loads(path.read_text()).items() if k in POLICY_KEYS} if path.is_file() else {}


def with_recorded_policy(settings: Settings) -> Settings:
    """`settings` with the validation policy recorded for NAME (record_policy) over params.yaml's."""
    policy = recorded_policy(settings)
    return settings.model_copy(update={"ingest": settings.ingest.model_copy(update=policy)}) if policy else settings


def validate_dataset(settings: Settings, mapper=None) -> ValidationReport:
    """data/NAME/raw.parquet -> data/NAME/validated.parquet + validated.json, reports/NAME/validation.json + Data Docs.

    The policy recorded for NAME by `cellcast validate --dedupe/--long-gaps/--bad-series` applies over params.yaml's.
    A panel is validated per series, partition by partition (panel_validation.py); `mapper(fn, tasks)` runs the
    partitions elsewhere, e.g. `lambda fn, tasks: client.gather(client.map(fn, tasks))` with a Dask client."""
    settings = with_recorded_policy(settings)
    meta = read_raw_meta(settings)
    if is_panel(meta):
        return validate_panel(settings, meta, mapper)
    df, meta = read_raw(settings)
    pq_in, _ = raw_paths(settings)
    rep = validate_frame(df, meta, settings, write_report=True, source=str(pq_in))
    pq, js = validated_paths(settings)
    assert rep.frame is not None  # validate_frame returns only a passed report, which holds its frame
    write_parquet(rep.frame, pq)
    ahead = known_future_rows(df, meta, rep.frame["timestamp"].iloc[-1])
    write_parquet(ahead, future_path(settings))
    write_json(
        js,
        {
            **meta,
            "rows": rep.rows_out,
            "start": str(rep.frame["timestamp"].iloc[0]),
            "end": str(rep.frame["timestamp"].iloc[-1]),
            "bounds": rep.bounds,
            "validated_at": _now(),
            "report": rep.to_dict(),
            "data_md5": md5_file(pq),
        },
    )
    return rep
