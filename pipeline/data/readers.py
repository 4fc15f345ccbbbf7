"""Reading a user's CSV or Parquet file into the canonical frame: format, encoding and delimiter
detection, then the time column and the value columns parsed (day-first dates, Unix times, decimal
commas and thousands separators included). Every refusal is an IngestError naming the file, the column
and the first bad line."""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, IngestError

DELIMITERS = [",", ";", "\t", "|"]
_SNIFF_BYTES = 64 * 1024


def detect_format(path: Path, fmt: str | None) -> str:
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
        raise IngestError.broken("binary", f"{path}: binary content, not a CSV text file (NUL byte at offset {head.index(0)})")
    # cut at the last newline so a multi-byte character is not split
    cut = head if len(head) < _SNIFF_BYTES else head[: head.rfind(b"\n") + 1 or len(head)]
    try:
        return cut.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as e:
        text = cut.decode("latin-1")
        ctrl = sum(1 for c in text if ord(c) < 32 and c not in "\r\n\t") + sum(1 for c in text if 0x7F <= ord(c) < 0xA0)
        if ctrl > 0.05 * max(1, len(text)):
            raise IngestError.broken("binary", f"{path}: binary content, not a CSV text file (byte 0x{cut[e.start]:02x} at offset "
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
        raise IngestError.broken("delimiter", f"{path}: the columns do not split on any of , ; tab | (the header is one column "
                          f"'{lines[0][:60]}'); pass --delimiter")
    return best


def _show_delim(d: str) -> str:
    return "tab" if d == "\t" else d


def read_csv(path: Path, delimiter: str | None) -> tuple[pd.DataFrame, dict]:
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head.strip():
        raise IngestError.broken("empty", f"{path}: empty file ({len(head)} bytes), no header and no rows")
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
        raise IngestError.broken("empty", f"{path}: empty file, no header and no rows") from None
    except pd.errors.ParserError as e:
        msg = str(e).strip().splitlines()[-1]
        hint = "" if declared else "; pass --delimiter if the sniffed one is wrong"
        raise IngestError.broken("delimiter", f"{path}: rows do not split like the header with delimiter '{_show_delim(delimiter)}' "
                          f"({msg}){hint}") from None
    except UnicodeDecodeError as e:
        raise IngestError.broken("encoding", f"{path}: not UTF-8 text beyond the first {_SNIFF_BYTES} bytes ({e.reason} at byte "
                          f"{e.start})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if df.shape[1] == 1:
        col = df.columns[0]
        others = [d for d in DELIMITERS if d != delimiter and d in col]
        guess = f": the header looks '{_show_delim(others[0])}'-separated, try --delimiter '{_show_delim(others[0])}'" \
            if others else "; pass --delimiter"
        raise IngestError.broken("delimiter", f"{path}: the columns do not split with delimiter '{_show_delim(delimiter)}' (one column "
                          f"'{col[:60]}'){guess}")
    return df, {"delimiter": delimiter, "encoding": encoding}


def read_parquet(path: Path) -> tuple[pd.DataFrame, dict]:
    size = path.stat().st_size
    if size == 0:
        raise IngestError.broken("empty", f"{path}: empty file (0 bytes), not a Parquet file")
    with open(path, "rb") as f:
        magic = f.read(4)
        f.seek(max(0, size - 4))
        tail = f.read(4)
    if magic != b"PAR1" or tail != b"PAR1":
        raise IngestError.broken("parquet", f"{path}: not a Parquet file (no PAR1 magic bytes at its start and end)")
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise IngestError.broken("parquet", f"{path}: cannot be read as Parquet ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(df.index, pd.RangeIndex) and df.index.name:
        df = df.reset_index()  # a time index saved by pandas becomes a column again
    df.columns = [str(c) for c in df.columns]
    return df, {}


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
        raise IngestError.broken("time_parse", f"{path}: time column '{col}' holds numbers (e.g. {raw.iloc[0]!r}), not dates: "
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
        raise IngestError.broken("time_parse", f"{path}: time column '{col}': {int(bad.sum())} values are not dates{how} "
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
            raise IngestError.broken("numeric", f"{path}: column '{c}': {int(bad.sum())} non-numeric values "
                              f"(first {str(txt.iloc[i])[:40]!r} at {_where(i, fmt)})", int(bad.sum()))
        out[c] = num.astype("float64").to_numpy()
    return out, decimal


def canonical_frame(path: Path, df: pd.DataFrame, time_col: str, targets: list[str], features: list[str], fmt: str,
               delimiter: str | None, time_format: str | None = None, time_unit: str | None = None
               ) -> tuple[pd.DataFrame, dict]:
    names = targets + features
    found = ", ".join(df.columns[:30]) + (f" ... ({len(df.columns)} in all)" if len(df.columns) > 30 else "")
    if time_col not in df.columns:
        raise IngestError.broken("time_column", f"{path}: no time column '{time_col}' (columns found: {found}); pass --time-col")
    for kind, cols in (("target", targets), ("feature", features)):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise IngestError.broken("column_missing", f"{path}: {kind} column '{missing[0]}' not found (columns found: {found})")
    if len(df) == 0:
        raise IngestError.broken("header_only", f"{path}: header only, no data rows (columns found: {found})")
    ts, tz = _parse_time(path, df[time_col], time_col, fmt, time_format, time_unit)
    values, decimal = _parse_numeric(path, df, names, fmt, delimiter)
    out = pd.DataFrame({"timestamp": ts.to_numpy(), **values})
    unsorted = not out["timestamp"].is_monotonic_increasing
    if unsorted:
        out = out.sort_values("timestamp", kind="stable", ignore_index=True)
    return out, {"timezone": tz, "unsorted": bool(unsorted), "decimal": decimal}
