"""Any CSV / Parquet file (or a bundled dataset) -> canonical Parquet + metadata.

Canonical frame: column `timestamp` (datetime64[ns], tz-naive; UTC if the input had a zone), then the
value columns, targets first, float64, sorted by time. Duplicated timestamps, gaps, NaN and inf are
kept as they are: the validation policy decides about them. Ingest only refuses what cannot be read
as a time series, with one line naming the file and the problem, and keeps a copy of the rejected
input in quarantine. The input file is only ever read.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from . import datasets
from ..config import Settings
from ..errors import ConfigError, IngestError

DELIMITERS = [",", ";", "\t", "|"]
_SNIFF_BYTES = 64 * 1024
_MIN_STEP_SHARE = 0.5   # the most common step must cover this share of steps to be taken as the frequency


@dataclass
class SeriesMeta:
    name: str
    source: str                     # "file" or "bundled:NAME"
    input_path: str
    input_sha256: str
    format: str                     # csv | parquet | bundled
    time_col: str                   # the time column as named in the input
    targets: list[str]
    features: list[str]
    freq: str                       # pandas alias
    freq_source: str                # declared | inferred
    rows: int
    columns: list[str]
    start: str | None
    end: str | None
    gaps: dict                      # {count, missing_steps, longest_steps, off_grid}
    duplicates: int                 # rows whose timestamp repeats an earlier one
    unsorted: bool                  # the input was not in time order (the output is)
    timezone: str | None            # the input's zone if it had one (values converted to UTC)
    ingested_at: str
    delimiter: str | None = None
    encoding: str | None = None
    decimal: str | None = None
    dataset: dict | None = None     # DatasetInfo of a bundled dataset
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SeriesMeta":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass
class IngestResult:
    name: str
    frame: pd.DataFrame
    meta: SeriesMeta
    parquet_path: Path
    meta_path: Path


def _err(rule: str, message: str, count: int | None = None) -> IngestError:
    """An IngestError carrying the rule it broke (and a count), for the quarantine report."""
    e = IngestError(message)
    e.rule, e.count = rule, count
    return e


# ---------------------------------------------------------------- paths

def raw_paths(name: str, settings: Settings) -> tuple[Path, Path]:
    d = Path(settings.paths.data) / name
    return d / "raw.parquet", d / "raw.json"


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def quarantine_dir(name: str, settings: Settings) -> Path:
    d = Path(settings.paths.quarantine) / f"{name}-{utc_stamp()}"
    d.mkdir(parents=True, exist_ok=False)
    return d


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


# ---------------------------------------------------------------- frequency and gaps

def to_freq(freq, where: str = "--freq") -> str:
    """A pandas alias checked and normalised ('30T' style legacy aliases are refused by pandas 3)."""
    try:
        return pd.tseries.frequencies.to_offset(freq).freqstr
    except (ValueError, TypeError):
        raise ConfigError(f"{where} '{freq}': not a pandas frequency alias (e.g. 5min, 30min, h, D, B, W-SUN, MS)") from None


def infer_freq(ts: pd.Series | pd.DatetimeIndex, source: str = "input") -> str:
    """The regular step of a (possibly gappy, unsorted, duplicated) time index.

    pd.infer_freq needs a gap-free index, so it is only the fast path; otherwise the most common
    positive step is the frequency when it covers at least half of the steps. Daily data with no
    weekend timestamps is business-daily ('B'), so that weekends are not counted as gaps.
    """
    idx = pd.DatetimeIndex(ts).dropna().unique().sort_values()
    if len(idx) < 3:
        raise _err("frequency", f"{source}: cannot infer a frequency from {len(idx)} distinct timestamps; pass --freq")
    try:
        with warnings.catch_warnings():  # pandas 3 warns that infer_freq will return an offset: either works below
            warnings.simplefilter("ignore")
            f = pd.infer_freq(idx)
    except (ValueError, TypeError):
        f = None
    if f:
        return to_freq(f)
    steps = pd.Series(idx[1:] - idx[:-1])
    counts = steps.value_counts()
    step, n = counts.index[0], int(counts.iloc[0])
    if n / len(steps) < _MIN_STEP_SHARE:
        raise _err("frequency", f"{source}: cannot infer a regular frequency: the most common step {step} covers only "
                          f"{n}/{len(steps)} steps; pass --freq")
    day = pd.Timedelta(days=1)
    if step == day:
        return "D" if (idx.day_of_week >= 5).any() else "B"
    if step == 7 * day:
        return to_freq(f"W-{idx[0].day_name()[:3].upper()}")
    if pd.Timedelta(days=28) <= step <= pd.Timedelta(days=31):
        if (idx.day == 1).all():
            return "MS"
        if idx.is_month_end.all():
            return "ME"
    if pd.Timedelta(days=365) <= step <= pd.Timedelta(days=366):
        if ((idx.month == 1) & (idx.day == 1)).all():
            return "YS"
        if idx.is_year_end.all():
            return "YE"
    return pd.tseries.frequencies.to_offset(step).freqstr


def grid_positions(ts: pd.Series | pd.DatetimeIndex, freq: str) -> tuple[pd.DatetimeIndex, np.ndarray, int]:
    """The regular grid from the first to the last timestamp, each timestamp's nearest grid position,
    and how many timestamps were not exactly on the grid (clock drift; snapped to the nearest point)."""
    idx = pd.DatetimeIndex(ts)
    off = pd.tseries.frequencies.to_offset(freq)
    first, last = idx.min(), idx.max()
    grid = pd.date_range(off.rollback(first), off.rollforward(last), freq=off)
    pos = grid.get_indexer(idx, method="nearest")
    off_grid = int((grid[pos] != idx).sum())
    return grid, pos, off_grid


def gap_stats(ts: pd.Series | pd.DatetimeIndex, freq: str) -> dict:
    """Gaps of a sorted time index measured in steps of freq: count, missing steps, longest."""
    idx = pd.DatetimeIndex(ts).dropna()
    if len(idx) < 2:
        return {"count": 0, "missing_steps": 0, "longest_steps": 0, "off_grid": 0}
    _, pos, off_grid = grid_positions(idx, freq)
    d = np.diff(np.sort(pos)) - 1
    d = d[d > 0]
    return {"count": int(len(d)), "missing_steps": int(d.sum()), "longest_steps": int(d.max()) if len(d) else 0,
            "off_grid": off_grid}


# ---------------------------------------------------------------- reading

def _detect_format(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in ("csv", "parquet"):
            raise ConfigError(f"{path}: format '{fmt}' is not csv or parquet")
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    with open(path, "rb") as f:
        return "parquet" if f.read(4) == b"PAR1" else "csv"


def _decode_head(path: Path, head: bytes) -> tuple[str, str]:
    """The start of a text file and its encoding; binary content is refused."""
    if b"\x00" in head:
        raise _err("binary", f"{path}: binary content, not a CSV text file (NUL byte at offset {head.index(0)})")
    # cut at the last newline so a multi-byte character is not split
    cut = head if len(head) < _SNIFF_BYTES else head[: head.rfind(b"\n") + 1 or len(head)]
    try:
        return cut.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as e:
        text = cut.decode("latin-1")
        ctrl = sum(1 for c in text if ord(c) < 32 and c not in "\r\n\t") + sum(1 for c in text if 0x7F <= ord(c) < 0xA0)
        if ctrl > 0.05 * max(1, len(text)):
            raise _err("binary", f"{path}: binary content, not a CSV text file (byte 0x{cut[e.start]:02x} at offset "
                              f"{e.start} is not UTF-8 text)") from None
        return text, "latin-1"


def _sniff_delimiter(path: Path, text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()][:50]
    if len(lines) > 1 and not text.endswith("\n") and len(text) >= _SNIFF_BYTES:
        lines = lines[:-1]
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        pass
    # fall back to the delimiter that splits the header most and every line the same way
    best, best_n = None, 0
    for d in DELIMITERS:
        counts = {ln.count(d) for ln in lines}
        if len(counts) == 1 and (n := counts.pop()) > best_n:
            best, best_n = d, n
    if best is None:
        raise _err("delimiter", f"{path}: the columns do not split on any of , ; tab | (the header is one column "
                          f"'{lines[0][:60]}'); pass --delimiter")
    return best


def _show_delim(d: str) -> str:
    return "tab" if d == "\t" else d


def _read_csv(path: Path, delimiter: str | None) -> tuple[pd.DataFrame, dict]:
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head.strip():
        raise _err("empty", f"{path}: empty file ({len(head)} bytes), no header and no rows")
    text, encoding = _decode_head(path, head)
    declared = delimiter is not None
    if declared:
        delimiter = {"tab": "\t", "\\t": "\t"}.get(delimiter, delimiter)
        if len(delimiter) != 1:
            raise ConfigError(f"--delimiter '{delimiter}': must be one character (or 'tab')")
    else:
        delimiter = _sniff_delimiter(path, text)
    try:
        df = pd.read_csv(path, sep=delimiter, encoding="utf-8-sig" if encoding == "utf-8" else encoding,
                         dtype=str, keep_default_na=True, skipinitialspace=True, engine="c")
    except pd.errors.EmptyDataError:
        raise _err("empty", f"{path}: empty file, no header and no rows") from None
    except pd.errors.ParserError as e:
        msg = str(e).strip().splitlines()[-1]
        hint = "" if declared else "; pass --delimiter if the sniffed one is wrong"
        raise _err("delimiter", f"{path}: rows do not split like the header with delimiter '{_show_delim(delimiter)}' "
                          f"({msg}){hint}") from None
    except UnicodeDecodeError as e:
        raise _err("encoding", f"{path}: not UTF-8 text beyond the first {_SNIFF_BYTES} bytes ({e.reason} at byte "
                          f"{e.start})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if df.shape[1] == 1:
        col = df.columns[0]
        others = [d for d in DELIMITERS if d != delimiter and d in col]
        guess = f": the header looks '{_show_delim(others[0])}'-separated, try --delimiter '{_show_delim(others[0])}'" \
            if others else "; pass --delimiter"
        raise _err("delimiter", f"{path}: the columns do not split with delimiter '{_show_delim(delimiter)}' (one column "
                          f"'{col[:60]}'){guess}")
    return df, {"delimiter": delimiter, "encoding": encoding}


def _read_parquet(path: Path) -> tuple[pd.DataFrame, dict]:
    size = path.stat().st_size
    if size == 0:
        raise _err("empty", f"{path}: empty file (0 bytes), not a Parquet file")
    with open(path, "rb") as f:
        magic = f.read(4)
        f.seek(max(0, size - 4))
        tail = f.read(4)
    if magic != b"PAR1" or tail != b"PAR1":
        raise _err("parquet", f"{path}: not a Parquet file (no PAR1 magic bytes at its start and end)")
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise _err("parquet", f"{path}: cannot be read as Parquet ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(df.index, pd.RangeIndex) and df.index.name:
        df = df.reset_index()  # a time index saved by pandas becomes a column again
    df.columns = [str(c) for c in df.columns]
    return df, {}


# ---------------------------------------------------------------- parsing

def _where(i: int, fmt: str) -> str:
    # CSV: the line in the file (header is line 1); Parquet: the 0-based row
    return f"line {i + 2}" if fmt == "csv" else f"row {i}"


def _regularity(t: pd.Series) -> float:
    """Share of consecutive steps (in file order) equal to the most common positive step: a day-first
    date read month-first jumps back and forth and scores low."""
    d = t.diff().dropna()
    d = d[d > pd.Timedelta(0)]
    return float((d == d.mode().iloc[0]).sum()) / max(len(t) - 1, 1) if len(d) else 0.0


_TIME_UNITS = ("s", "ms", "us", "ns")


def _parse_time(path: Path, s: pd.Series, col: str, fmt: str, time_format: str | None = None,
                time_unit: str | None = None) -> tuple[pd.Series, str | None]:
    raw = s.astype("string").str.strip() if not pd.api.types.is_datetime64_any_dtype(s) else None
    if pd.api.types.is_datetime64_any_dtype(s):
        t = s
    elif time_unit:
        if time_unit not in _TIME_UNITS:
            raise ConfigError(f"--time-unit '{time_unit}': one of {', '.join(_TIME_UNITS)}")
        t = pd.to_datetime(pd.to_numeric(raw, errors="coerce"), unit=time_unit, errors="coerce")
    elif pd.to_numeric(raw, errors="coerce").notna().all():
        raise _err("time_parse", f"{path}: time column '{col}' holds numbers (e.g. {raw.iloc[0]!r}), not dates: "
                                 f"for Unix times pass --time-unit s (or ms, us, ns)")
    else:
        tries = [{"format": time_format}] if time_format else \
            [{}, {"format": "ISO8601"}, {"format": "mixed"}, {"format": "mixed", "dayfirst": True}]
        parsed = []
        for kw in tries:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # "could not infer format": we compare the candidates ourselves
                try:
                    cand = pd.to_datetime(raw, errors="coerce", **kw)
                except (ValueError, TypeError):
                    # offsets that differ between rows (DST): parse to UTC
                    try:
                        cand = pd.to_datetime(raw, errors="coerce", utc=True, **kw)
                    except (ValueError, TypeError):
                        continue
            parsed.append(cand)
        t = None
        if parsed:
            fewest = min(int(c.isna().sum()) for c in parsed)
            complete = [c for c in parsed if int(c.isna().sum()) == fewest]
            # of the readings that parse the most values, the most regular: 03/04 is April 3rd when the
            # file steps one day at a time that way (the first, pandas' own reading, wins a tie)
            t = max(complete, key=_regularity) if fewest == 0 and len(complete) > 1 else complete[0]
        if t is None:
            t = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns]")
    bad = t.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        first = raw.iloc[i] if raw is not None else None
        first = "<empty>" if first is None or pd.isna(first) or first == "" else repr(str(first)[:40])
        how = f" with --time-format {time_format!r}" if time_format else \
            (f" as Unix times in {time_unit}" if time_unit else "")
        raise _err("time_parse", f"{path}: time column '{col}': {int(bad.sum())} values are not dates{how} "
                                 f"(first {first} at {_where(i, fmt)})", int(bad.sum()))
    tz = None
    if getattr(t.dt, "tz", None) is not None:
        tz = str(t.dt.tz)
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    return t.astype("datetime64[ns]"), tz


def _parse_numeric(path: Path, df: pd.DataFrame, cols: list[str], fmt: str, delimiter: str | None
                   ) -> tuple[dict[str, np.ndarray], str | None]:
    out, decimal = {}, None
    for c in cols:
        s = df[c]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            out[c] = s.astype("float64").to_numpy()
            continue
        txt = s.astype("string").str.strip()
        num = pd.to_numeric(txt, errors="coerce")
        bad = num.isna() & txt.notna() & (txt != "")
        if bad.any() and delimiter not in (",", None):
            # decimal commas ("3,5") are common in ';'-separated exports
            alt = pd.to_numeric(txt.str.replace(",", ".", regex=False), errors="coerce")
            if not (alt.isna() & txt.notna() & (txt != "")).any():
                num, bad, decimal = alt, bad & False, ","
        if bad.any():
            # thousands separators: "1,234.5" (quoted in a comma-delimited file, or with a decimal point)
            grouped = txt[bad].str.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?")
            if grouped.all() and (delimiter == "," or txt[bad].str.contains(".", regex=False).any()):
                num, bad, decimal = pd.to_numeric(txt.str.replace(",", "", regex=False), errors="coerce"), bad & False, \
                    "." if decimal is None else decimal
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise _err("numeric", f"{path}: column '{c}': {int(bad.sum())} non-numeric values "
                              f"(first {str(txt.iloc[i])[:40]!r} at {_where(i, fmt)})", int(bad.sum()))
        out[c] = num.astype("float64").to_numpy()
    return out, decimal


def _canonical(path: Path, df: pd.DataFrame, time_col: str, targets: list[str], features: list[str], fmt: str,
               delimiter: str | None, time_format: str | None = None, time_unit: str | None = None
               ) -> tuple[pd.DataFrame, dict]:
    names = targets + features
    found = ", ".join(df.columns[:30]) + (f" ... ({len(df.columns)} in all)" if len(df.columns) > 30 else "")
    if time_col not in df.columns:
        raise _err("time_column", f"{path}: no time column '{time_col}' (columns found: {found}); pass --time-col")
    for kind, cols in (("target", targets), ("feature", features)):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise _err("column_missing", f"{path}: {kind} column '{missing[0]}' not found (columns found: {found})")
    if len(df) == 0:
        raise _err("header_only", f"{path}: header only, no data rows (columns found: {found})")
    ts, tz = _parse_time(path, df[time_col], time_col, fmt, time_format, time_unit)
    values, decimal = _parse_numeric(path, df, names, fmt, delimiter)
    out = pd.DataFrame({"timestamp": ts.to_numpy(), **values})
    unsorted = not out["timestamp"].is_monotonic_increasing
    if unsorted:
        out = out.sort_values("timestamp", kind="stable", ignore_index=True)
    return out, {"timezone": tz, "unsorted": bool(unsorted), "decimal": decimal}


# ---------------------------------------------------------------- writing

def _describe(out: pd.DataFrame, freq: str) -> dict:
    ts = out["timestamp"]
    return {
        "rows": int(len(out)),
        "columns": list(out.columns),
        "start": str(ts.iloc[0]) if len(ts) else None,
        "end": str(ts.iloc[-1]) if len(ts) else None,
        "gaps": gap_stats(ts.drop_duplicates(), freq),
        "duplicates": int(ts.duplicated().sum()),
    }


def _write(name: str, out: pd.DataFrame, meta: SeriesMeta, settings: Settings) -> IngestResult:
    pq, js = raw_paths(name, settings)
    pq.parent.mkdir(parents=True, exist_ok=True)
    tmp = pq.with_name(pq.name + ".tmp")
    out.to_parquet(tmp, index=False)
    os.replace(tmp, pq)
    _write_json(js, meta.to_dict())
    return IngestResult(name, out, meta, pq, js)


def _quarantine(name: str, path: Path, error: Exception, settings: Settings, extra: dict) -> Path:
    q = quarantine_dir(name, settings)
    copied = None
    if path.is_file():
        shutil.copy2(path, q / path.name)
        copied = path.name
    _write_json(q / "report.json", {"stage": "ingest", "name": name, "input_path": str(path), "copied": copied,
                                    "error": str(error), "rule": getattr(error, "rule", type(error).__name__),
                                    "count": getattr(error, "count", None),
                                    "at": utc_stamp(), **extra})
    return q


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or name != name.strip():
        raise ConfigError(f"--name '{name}': must be a plain folder name (no slashes, not hidden)")


def _check_options(time_col: str, targets: list[str], features: list[str]) -> None:
    if not targets:
        raise ConfigError("--target: at least one target column is needed")
    names = targets + features
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise ConfigError(f"column '{dup[0]}' is listed more than once among targets and features")
    if time_col in names:
        raise ConfigError(f"column '{time_col}' is the time column; it cannot also be a target or feature")
    if "timestamp" in names:
        raise ConfigError("column 'timestamp' is reserved for the time column; it cannot be a target or feature")


def ingest_file(path: str | Path, *, name: str, time_col: str, targets: list[str], features: list[str] | None = None,
                freq: str | None = None, fmt: Literal["csv", "parquet"] | None = None, delimiter: str | None = None,
                time_format: str | None = None, time_unit: str | None = None, settings: Settings) -> IngestResult:
    """Read a CSV or Parquet file into data/NAME/raw.parquet + raw.json. Failures: IngestError, input quarantined.

    time_format: a strftime format for the time column (else detected, day-first readings included);
    time_unit: s | ms | us | ns when the time column holds Unix times."""
    _check_name(name)
    features = list(features or [])
    targets = list(targets)
    _check_options(time_col, targets, features)
    path = Path(path)
    pq, _ = raw_paths(name, settings)
    if pq.exists() and path.exists() and pq.resolve() == path.resolve():
        raise ConfigError(f"{path}: is the output of dataset '{name}'; ingest a copy under another --name")
    declared = to_freq(freq) if freq else None
    try:
        if not path.exists():
            raise _err("missing_file", f"{path}: file not found")
        if path.is_dir():
            raise _err("directory", f"{path}: is a directory, not a CSV or Parquet file")
        kind = _detect_format(path, fmt)
        sha = datasets.sha256_file(path)
        df, info = _read_csv(path, delimiter) if kind == "csv" else _read_parquet(path)
        out, more = _canonical(path, df, time_col, targets, features, kind, info.get("delimiter"), time_format,
                               time_unit)
        f = declared or infer_freq(out["timestamp"], str(path))
    except (IngestError, ConfigError) as e:
        _quarantine(name, path, e, settings, {"format": fmt, "time_col": time_col, "targets": targets,
                                               "features": features})
        raise
    meta = SeriesMeta(name=name, source="file", input_path=str(path), input_sha256=sha, format=kind,
                      time_col=time_col, targets=targets, features=features, freq=f,
                      freq_source="declared" if declared else "inferred", timezone=more["timezone"],
                      unsorted=more["unsorted"], ingested_at=datetime.now(timezone.utc).isoformat(),
                      delimiter=info.get("delimiter"), encoding=info.get("encoding"), decimal=more["decimal"],
                      extra={"time_format": time_format, "time_unit": time_unit}, **_describe(out, f))
    return _write(name, out, meta, settings)


def ingest_bundled(name: str, settings: Settings) -> IngestResult:
    """A bundled dataset (see `cellcast datasets`) into data/NAME/raw.parquet + raw.json."""
    info = datasets.dataset_info(name)
    out = datasets.load_bundled(name)
    src = datasets.source_file(name)
    unsorted = not out["timestamp"].is_monotonic_increasing
    if unsorted:
        out = out.sort_values("timestamp", kind="stable", ignore_index=True)
    meta = SeriesMeta(name=name, source=f"bundled:{name}", input_path=str(src), input_sha256=datasets.sha256_file(src),
                      format="bundled", time_col=info.time_col, targets=list(info.targets),
                      features=list(info.features), freq=info.freq, freq_source="declared", timezone=None,
                      unsorted=bool(unsorted), ingested_at=datetime.now(timezone.utc).isoformat(),
                      dataset=info.to_dict(), **_describe(out, info.freq))
    return _write(name, out, meta, settings)


def read_raw(name: str, settings: Settings) -> tuple[pd.DataFrame, dict]:
    """The canonical frame and metadata written by ingest."""
    from ..errors import NotFoundError
    pq, js = raw_paths(name, settings)
    if not pq.is_file() or not js.is_file():
        raise NotFoundError(f"{pq}: dataset '{name}' is not ingested; run `cellcast ingest` first")
    return pd.read_parquet(pq), json.loads(js.read_text())
