"""Reading a user's CSV or Parquet file into the canonical frame: format, encoding and delimiter
detection, then the time column and the value columns parsed (day-first dates, Unix times, decimal
commas and thousands separators included). Every refusal is an IngestError naming the file, the column
and the first bad line."""
from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, IngestError
from .panel import series_key, sort_panel

DELIMITERS = [",", ";", "\t", "|"]
_SNIFF_BYTES = 64 * 1024


def detect_format(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in ("csv", "parquet"):
            raise ConfigError(f"{path}: format '{fmt}' is not csv or parquet; use one of them")
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
        raise IngestError.broken("binary", f"{path}: binary content, not a CSV text file (NUL byte at offset {head.index(0)}); "
                                 f"export the series as CSV text (UTF-8), or pass --parquet for a Parquet file")
    # cut at the last newline so a multi-byte character is not split
    cut = head if len(head) < _SNIFF_BYTES else head[: head.rfind(b"\n") + 1 or len(head)]
    try:
        return cut.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as e:
        text = cut.decode("latin-1")
        ctrl = sum(1 for c in text if ord(c) < 32 and c not in "\r\n\t") + sum(1 for c in text if 0x7F <= ord(c) < 0xA0)
        if ctrl > 0.05 * max(1, len(text)):
            raise IngestError.broken("binary", f"{path}: binary content, not a CSV text file (byte 0x{cut[e.start]:02x} at offset "
                              f"{e.start} is not UTF-8 text); export the series as CSV text (UTF-8), or pass --parquet for a Parquet file") from None
        return text, "latin-1"


def _sniff_delimiter(path: Path, text: str) -> str:
    # the lines a CSV parser sees (str.splitlines also breaks at \x1c..\x1e, \x85, \u2028)
    lines = [ln for ln in re.split(r"\r\n|\r|\n", text) if ln.strip()][:50]
    if not lines:
        raise IngestError.broken("empty", f"{path}: no header and no rows (only blank space); export the series with a "
                                 f"header line naming its columns")
    if len(lines) > 1 and not text.endswith("\n") and len(text) >= _SNIFF_BYTES:
        lines = lines[:-1]
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        pass
    # fall back to the delimiter that splits the header most and every line the same way; else the one that
    # splits the header most (the rows that split otherwise are then named by the parser)
    best, best_n = None, 0
    for d in DELIMITERS:
        counts = {ln.count(d) for ln in lines}
        if len(counts) == 1 and (n := counts.pop()) > best_n:
            best, best_n = d, n
    if best is None:
        n, d = max((lines[0].count(d), d) for d in DELIMITERS)
        best = d if n else None
    if best is None:
        raise IngestError.broken("delimiter", f"{path}: the columns do not split on any of , ; tab | (the header is one column "
                          f"'{_show(lines[0])}'); pass --delimiter")
    return best


def _show(text, n: int = 60) -> str:
    """Text from the file, cut to `n` characters, for a one-line message: invisible characters escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text)[:n])


def _show_delim(d: str) -> str:
    return "tab" if d == "\t" else d


def read_csv(path: Path, delimiter: str | None) -> tuple[pd.DataFrame, dict]:
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head.strip():
        raise IngestError.broken("empty", f"{path}: empty file ({len(head)} bytes), no header and no rows; export the series "
                                 f"with a header line naming its columns")
    text, encoding = _decode_head(path, head)
    declared = delimiter is not None
    if delimiter is not None:
        delimiter = {"tab": "\t", "\\t": "\t"}.get(delimiter, delimiter)
        if len(delimiter) != 1:
            raise ConfigError(f"--delimiter '{delimiter}': must be one character (or 'tab')")
    else:
        delimiter = _sniff_delimiter(path, text)
    try:
        df = pd.read_csv(path, sep=delimiter, encoding="utf-8-sig" if encoding == "utf-8" else encoding,
                         dtype=str, keep_default_na=True, skipinitialspace=True, engine="c")
    except pd.errors.EmptyDataError:
        raise IngestError.broken("empty", f"{path}: empty file, no header and no rows; export the series with a header "
                                 f"line naming its columns") from None
    except pd.errors.ParserError as e:
        msg = str(e).strip().splitlines()[-1]
        hint = "" if declared else "; pass --delimiter if the sniffed one is wrong"
        raise IngestError.broken("delimiter", f"{path}: rows do not split like the header with delimiter '{_show_delim(delimiter)}' "
                          f"({msg}){hint}") from None
    except UnicodeDecodeError as e:
        raise IngestError.broken("encoding", f"{path}: not UTF-8 text beyond the first {_SNIFF_BYTES} bytes ({e.reason} at byte "
                          f"{e.start}); re-save the file as UTF-8") from None
    # a second byte-order mark (files joined together) is no part of a name
    df.columns = [str(c).strip().lstrip("\ufeff") for c in df.columns]
    try:   # the header as written: pandas renames a repeated name ('load', 'load.1') and would pick one silently
        head = pd.read_csv(path, sep=delimiter, encoding="utf-8-sig" if encoding == "utf-8" else encoding, header=None,
                           nrows=1, dtype=str, skipinitialspace=True, engine="c").iloc[0]
        names = [str(c).strip().lstrip("\ufeff") for c in head if isinstance(c, str) and c.strip()]
    except (ValueError, UnicodeDecodeError, IndexError):
        names = list(df.columns)
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise IngestError.broken("header", f"{path}: column '{_show(dup[0])}' appears more than once in the header "
                                 f"(spaces around names ignored); rename one of them")
    if df.shape[1] == 1:
        col = df.columns[0]
        others = [d for d in DELIMITERS if d != delimiter and d in col]
        guess = f": the header looks '{_show_delim(others[0])}'-separated, try --delimiter '{_show_delim(others[0])}'" \
            if others else "; pass --delimiter"
        raise IngestError.broken("delimiter", f"{path}: the columns do not split with delimiter '{_show_delim(delimiter)}' (one column "
                          f"'{_show(col)}'){guess}")
    return df, {"delimiter": delimiter, "encoding": encoding}


def read_parquet(path: Path) -> tuple[pd.DataFrame, dict]:
    size = path.stat().st_size
    if size == 0:
        raise IngestError.broken("empty", f"{path}: empty file (0 bytes), not a Parquet file; export the series again")
    with open(path, "rb") as f:
        magic = f.read(4)
        f.seek(max(0, size - 4))
        tail = f.read(4)
    if magic != b"PAR1" or tail != b"PAR1":
        raise IngestError.broken("parquet", f"{path}: not a Parquet file (no PAR1 magic bytes at its start and end); pass "
                                 f"--csv for a CSV file, or export the Parquet file again (it may be cut short)")
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise IngestError.broken("parquet", f"{path}: cannot be read as Parquet ({str(e).splitlines()[0][:200]}); export it "
                                 f"again") from None
    if not isinstance(df.index, pd.RangeIndex) and df.index.name:
        df = df.reset_index()  # a time index saved by pandas becomes a column again
    df.columns = [str(c) for c in df.columns]
    return df, {}


def read_parquet_dataset(path: Path) -> tuple[pd.DataFrame, dict]:
    """A folder of Parquet files as one frame, through a pyarrow dataset: hive-style folders (`sensor=A/`) give
    their column back (as strings), so a panel written partitioned by series reads as it was written."""
    import pyarrow.dataset as ds

    try:
        data = ds.dataset(str(path), format="parquet", partitioning="hive")
        if not data.files:
            raise IngestError.broken("empty", f"{path}: a folder without Parquet files; pass a CSV or Parquet file, or a "
                                     f"folder of Parquet files")
        df = data.to_table().to_pandas()
    except IngestError:
        raise
    except Exception as e:  # pyarrow raises several types for damaged or mixed files
        raise IngestError.broken("parquet", f"{path}: cannot be read as a Parquet dataset ({str(e).splitlines()[0][:200]})"
                                 ) from None
    for c in df.columns:
        if isinstance(df[c].dtype, pd.CategoricalDtype):   # a partition folder's value
            df[c] = df[c].astype(str)
    df.columns = [str(c) for c in df.columns]
    return df, {"files": len(data.files)}


def _locator(path: Path, fmt: str, delimiter: str | None = None, encoding: str | None = None):
    """Where row i of the frame is in the input: for a CSV the physical line (header = line 1; blank lines and
    quoted line breaks counted, as pandas skips or joins them), found only when a refusal needs it."""
    if fmt != "csv":
        return lambda i: f"row {i}"

    def where(i: int) -> str:
        try:
            with open(path, newline="", encoding="utf-8-sig" if encoding in (None, "utf-8") else encoding,
                      errors="replace") as f:
                reader = csv.reader(f, delimiter=delimiter or ",")
                prev, k = 0, -2        # k: data row index, -1 at the header
                for rec in reader:
                    start, prev = prev + 1, reader.line_num
                    if not any(x.strip() for x in rec):
                        continue
                    k += 1
                    if k == i:
                        return f"line {start}"
        except (OSError, csv.Error):
            pass
        return f"line {i + 2}"

    return where


_TIME_UNITS = ("s", "ms", "us", "ns")
DAY_FIRST, MONTH_FIRST = "day-first", "month-first"
_SAMPLE = 200          # values whose format is guessed (first ones + evenly spaced ones)
_DECISIVE = 0.1        # a reading covers its grid this much better than the other: the steps decide the order


def _format_order(fmt: str) -> str | None:
    """day-first, month-first, or None when the format cannot be confused (month names, year-first, ISO)."""
    d, m = fmt.find("%d"), fmt.find("%m")
    if d < 0 or m < 0 or fmt.startswith(("%Y", "%y")):
        return None
    return DAY_FIRST if d < m else MONTH_FIRST


# formats pandas cannot guess (two-digit years, 12-hour clocks), tried when it guesses none for some values
_EXTRA_FORMATS = [f"{d}{t}" for sep in "/.-" for d in (f"%d{sep}%m{sep}%y", f"%m{sep}%d{sep}%y", f"%d{sep}%m{sep}%Y",
                                                     f"%m{sep}%d{sep}%Y")
                  for t in ("", " %H:%M", " %H:%M:%S", " %I:%M %p", " %I:%M:%S %p")]


def _absorbs(fmt: str) -> bool:
    """A year-first format with the day before the month: a year-first value is year-month-day, and such a
    reading (pandas guesses it for day-first) would only absorb a bad month (2024-13-01)."""
    return fmt.startswith(("%Y", "%y")) and 0 <= fmt.find("%d") < fmt.find("%m")


def _usable(formats, order: str | None) -> list[str]:
    return sorted(f for f in formats if _format_order(f) in (order, None) and not _absorbs(f))


def _guesses(values) -> tuple[set[str], list]:
    """Formats that read the values (pandas' guesses in either order, else one of _EXTRA_FORMATS), and the
    values no format reads."""
    from pandas.tseries.api import guess_datetime_format

    formats: set[str] = set()
    unguessable: list = []
    for v in values:
        got = []
        for df in (False, True):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")   # "parsing dates in %d/%m/%Y format when dayfirst=False"
                    got.append(guess_datetime_format(str(v), dayfirst=df))
            except (ValueError, TypeError, OverflowError):
                got.append(None)
        if not any(got):
            unguessable.append(v)
        formats.update(f for f in got if f)
    if unguessable:
        rest = pd.Series(unguessable, dtype="string")
        ok = pd.Series(False, index=rest.index)
        for f in _EXTRA_FORMATS:
            hit = _to_datetime(rest, format=f)[0].notna()
            if hit.any():
                formats.add(f)
                ok |= hit
        unguessable = rest[~ok].tolist()
    return formats, unguessable


def _to_datetime(raw: pd.Series, **kw) -> tuple[pd.Series, str | None]:
    """One strict reading (errors become NaT), tz-aware results converted to naive UTC; and the zone seen."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "could not infer format", "parsing day-first": we choose ourselves
        try:
            t = pd.to_datetime(raw, errors="coerce", **kw)
        except (ValueError, TypeError, OverflowError):
            try:          # offsets that differ between rows (DST): parse to UTC
                t = pd.to_datetime(raw, errors="coerce", utc=True, **kw)
            except (ValueError, TypeError, OverflowError):
                return pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]"), None
    tz = None
    if getattr(t.dt, "tz", None) is not None:
        tz = str(t.dt.tz)
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    return _ns(t), tz


def _ns(t: pd.Series) -> pd.Series:
    """As datetime64[ns]; an instant outside its range (before 1677, after 2262) becomes NaT: not a date here."""
    if t.dtype != "datetime64[ns]":
        outside = (t < pd.Timestamp.min) | (t > pd.Timestamp.max)
        if outside.any():
            t = t.mask(outside)
    return t.astype("datetime64[ns]")


def _reading(raw: pd.Series, formats: list[str]) -> tuple[pd.Series, str | None, list]:
    """The column read with `formats`, each value by the first that fits (the most used first)
    -> (timestamps, zone, the formats that read values)."""
    parsed = [(f, *_to_datetime(raw, format=f)) for f in formats]
    parsed.sort(key=lambda x: -int(x[1].notna().sum()))
    t = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
    tz: str | None = None
    used: list[str] = []
    for f, cand, z in parsed:
        fill = t.isna() & cand.notna()
        if fill.any():
            t[fill], tz, used = cand[fill], tz or z, used + [f]
    return t, tz, used


def _grid_fit(t: pd.Series) -> float:
    """How well the timestamps make a series, 0..1: the share of the regular grid of their most common step
    they cover, times how straight the file walks through them (span / total path in file order: 1 for a
    file in time order, either way). A wrong day/month order scatters the stamps over months, or keeps
    them but sends the file back and forth between them, and scores near 0."""
    v = t.dropna()
    idx = pd.DatetimeIndex(v.unique()).sort_values()
    if len(idx) < 3:
        return 0.0
    step = pd.Series(idx[1:] - idx[:-1]).mode().iloc[0]
    span = idx[-1] - idx[0]
    cover = min(1.0, len(idx) / (span / step + 1))
    ns = v.to_numpy().astype("datetime64[ns]").astype(np.int64)
    path = float(np.abs(np.diff(ns)).sum())
    return cover * (span.value / path if path else 0.0)


def _parse_time(path: Path, s: pd.Series, col: str, where, time_format: str | None = None,
                time_unit: str | None = None, dayfirst: bool | None = None) -> tuple[pd.Series, str | None, dict]:
    """The time column as naive UTC timestamps, the zone it had, and how it was read.

    A date order (day-first or month-first) is only chosen when the file is unambiguous about it: one
    order reads values the other cannot and covers the series' steps, or the steps alone tell (the
    other order scatters them). Otherwise it must be given (`dayfirst`, or `time_format`). Values the
    chosen reading cannot parse are refused, counted and the first one named: a bad value never makes
    the other order reinterpret the good ones."""
    raw = s.astype("string").str.strip() if not pd.api.types.is_datetime64_any_dtype(s) else None
    info: dict[str, Any] = {"order": None, "formats": [], "chosen": "unambiguous"}
    given = None
    if raw is None:
        t, info["formats"] = s, ["datetime"]
    elif time_unit:
        if time_unit not in _TIME_UNITS:
            raise ConfigError(f"--time-unit '{time_unit}': one of {', '.join(_TIME_UNITS)}")
        t = pd.to_datetime(pd.to_numeric(raw, errors="coerce"), unit=time_unit, errors="coerce")
        info.update(formats=[f"unix {time_unit}"], chosen="given")
        given = f" as Unix times in {time_unit}"
    elif time_format:
        t, zone = _to_datetime(raw, format=time_format)
        info.update(formats=[time_format], chosen="given", order=_format_order(time_format), tz=zone)
        given = f" with --time-format {time_format!r}"
    elif raw.notna().any() and pd.to_numeric(raw, errors="coerce").notna().all():
        eg = str(raw.dropna().iloc[0])
        compact = eg.isdigit() and len(eg) == 8 and eg[:2] in ("19", "20")
        hint = "for dates like 20240131 pass --time-format %Y%m%d; " if compact else ""
        raise IngestError.broken("time_parse", f"{path}: time column '{col}' holds numbers (e.g. {eg!r}), not dates: "
                                 f"{hint}for Unix times pass --time-unit s (or ms, us, ns)")
    else:
        t, info = _read_dates(path, raw, col, dayfirst)
    tz = info.pop("tz", None)
    if getattr(t.dt, "tz", None) is not None:
        tz = str(t.dt.tz)
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    t = _ns(t)
    bad = t.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        first = raw.iloc[i] if raw is not None else None
        first = "<empty>" if first is None or pd.isna(first) or first == "" else repr(str(first)[:40])
        how = given if given is not None else _how(info)
        raise IngestError.broken("time_parse", f"{path}: time column '{col}': {int(bad.sum())} values are not dates{how} "
                                 f"(first {first} at {where(i)}): fix or remove those rows, "
                                 f"{_order_remedy(info)}", int(bad.sum()))
    return t, tz, info


def _how(info: dict) -> str:
    fmts = [f for f in info["formats"] if f != "mixed"]
    shown = f" ({', '.join(fmts[:3])})" if fmts else ""
    if info["order"] and info["chosen"] == "given":
        flag = "--dayfirst" if info["order"] == DAY_FIRST else "--monthfirst"
        return f" read {info['order']} as {flag} asks{shown}"
    if info["order"]:
        return f" read {info['order']} like the rest of the column{shown}"
    return f" in the column's format{shown}" if fmts else ""


def _order_remedy(info: dict) -> str:
    if info["order"] == MONTH_FIRST:
        return "or pass --dayfirst if the dates are day-first (or --time-format)"
    if info["order"] == DAY_FIRST:
        return "or pass --monthfirst if the dates are month-first (or --time-format)"
    return "or pass --time-format with the dates' strftime format"


def _read_dates(path: Path, raw: pd.Series, col: str, dayfirst: bool | None) -> tuple[pd.Series, dict]:
    """Date strings read by the formats they are written in (the order chosen as _parse_time says)
    -> (timestamps, {order, formats, chosen, tz})."""
    values = raw.dropna().unique()
    n = len(values)
    pick = np.unique(np.concatenate([np.arange(min(n, _SAMPLE)), np.linspace(0, n - 1, min(n, _SAMPLE)).astype(int)])) \
        if n else np.array([], dtype=int)
    formats, unguessable = _guesses(values[pick])
    # dateutil, value by value, only for a column whose values no format reads (it swaps day and month
    # silently where one of them cannot be a month, so it never gets to read a value a format could)
    fallback = bool(unguessable) and _to_datetime(pd.Series(unguessable, dtype="string"), format="mixed")[0].notna().any()

    def read(order: str | None) -> tuple[pd.Series, str | None, list]:
        fmts = _usable(formats, order) + ["ISO8601"]
        t, tz, used = _reading(raw, fmts)
        if t.isna().any():
            # rarer formats among the values not read (a time of day left out at midnight, say)
            more, _ = _guesses(raw[t.isna()].dropna().unique()[:_SAMPLE])
            extra = [f for f in _usable(more, order) if f not in fmts]
            t2, tz2, used2 = _reading(raw[t.isna()], extra)
            if fallback:
                rest = t.isna() & t2.reindex(t.index).isna() & raw.notna()
                # a value some format reads (in any order, swapped year-first ones included) is not dateutil's
                known = pd.Series(False, index=raw.index)
                for f in formats | more | {f.replace("%d", "%D").replace("%m", "%d").replace("%D", "%m")
                                            for f in formats | more}:
                    known[rest] |= _to_datetime(raw[rest], format=f)[0].notna()
                rest &= ~known
                t3, tz3 = _to_datetime(raw[rest], format="mixed", dayfirst=order == DAY_FIRST)
                t2 = pd.concat([t2[t2.notna()], t3[t3.notna()]])
                tz2, used2 = tz2 or tz3, used2 + (["mixed"] if t3.notna().any() else [])
            t2 = t2[t2.notna()]
            if len(t2):
                t = t.copy()
                t[t2.index] = t2
                tz, used = tz or tz2, used + [f for f in used2 if f not in used]
        return t, tz, used

    if dayfirst is not None:
        order = DAY_FIRST if dayfirst else MONTH_FIRST
        t, tz, used = read(order)
        return t, {"order": order, "formats": used, "chosen": "given", "tz": tz}
    if not fallback and not any(_format_order(f) for f in formats):
        # nothing to confuse: ISO, year-first or month names
        t, tz, used = read(None)
        if not any(_format_order(f) for f in used):
            return t, {"order": None, "formats": used, "chosen": "unambiguous", "tz": tz}
    readings = {o: read(o) for o in (DAY_FIRST, MONTH_FIRST)}
    td, tm = readings[DAY_FIRST][0], readings[MONTH_FIRST][0]
    both = td.notna() & tm.notna()
    if td.notna().equals(tm.notna()) and (td[both] == tm[both]).all():
        # both orders read the same instants (every day equals its month): nothing to decide
        t, tz, used = readings[MONTH_FIRST]
        return t, {"order": None, "formats": used, "chosen": "unambiguous", "tz": tz}
    fit = {o: _grid_fit(readings[o][0]) for o in readings}
    count = {o: int(readings[o][0].notna().sum()) for o in readings}
    if abs(fit[DAY_FIRST] - fit[MONTH_FIRST]) > _DECISIVE:
        order = max(fit, key=lambda o: fit[o])     # the other order scatters the series
    elif count[DAY_FIRST] != count[MONTH_FIRST]:
        order = max(count, key=lambda o: count[o])  # the other order cannot read values this one can
    else:
        i = int(np.flatnonzero((td != tm).to_numpy() & both.to_numpy())[0])
        raise IngestError.broken("date_order", f"{path}: time column '{col}': dates like {raw.iloc[i]!r} read both "
                                 f"day-first ({td.iloc[i]:%Y-%m-%d}) and month-first ({tm.iloc[i]:%Y-%m-%d}) and the "
                                 f"file does not tell which: pass --dayfirst or --monthfirst (or --time-format)")
    t, tz, used = readings[order]
    return t, {"order": order, "formats": used, "chosen": "detected", "tz": tz}


def _parse_numeric(path: Path, df: pd.DataFrame, cols: list[str], where, delimiter: str | None
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
        # a column that writes some decimals with a point does not write others with a comma: "1,234" there
        # is no 1.234 (a reading that would quietly divide it by a thousand)
        point = bool(txt[~bad & txt.notna()].str.contains(".", regex=False).any())
        if bad.any() and delimiter not in (",", None) and not point:
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
            mixed = " (the column writes decimals with '.')" if point and "," in str(txt.iloc[i]) else ""
            raise IngestError.broken("numeric", f"{path}: column '{c}': {int(bad.sum())} non-numeric values{mixed} "
                              f"(first {str(txt.iloc[i])[:40]!r} at {where(i)}): fix or blank those cells (blank "
                              f"cells are filled or refused by the gap policy, params.yaml ingest)", int(bad.sum()))
        out[c] = num.astype("float64").to_numpy()
    return out, decimal


def canonical_frame(path: Path, df: pd.DataFrame, time_col: str, targets: list[str], features: list[str], fmt: str,
                    delimiter: str | None, time_format: str | None = None, time_unit: str | None = None,
                    dayfirst: bool | None = None, encoding: str | None = None, id_cols: list[str] | None = None
                    ) -> tuple[pd.DataFrame, dict]:
    """The file's frame -> the canonical frame, and what was learnt reading it (zone, order, decimal mark,
    how the time column was read: `time_reading`). With `id_cols`, a panel: `series_id` and the id columns
    first, sorted by (series_id, timestamp); a refusal names the series of the row it points at."""
    names = targets + features
    found = ", ".join(_show(c) for c in df.columns[:30]) + (f" ... ({len(df.columns)} in all)" if len(df.columns) > 30 else "")
    if time_col not in df.columns:
        raise IngestError.broken("time_column", f"{path}: no time column '{time_col}' (columns found: {found}); pass --time-col")
    for kind, cols in (("target", targets), ("feature", features), ("id", id_cols or [])):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            opt = {"target": "--target", "feature": "--features", "id": "--id-col"}[kind]
            raise IngestError.broken("column_missing", f"{path}: {kind} column '{missing[0]}' not found (columns found: "
                                     f"{found}); pass {opt} with one of them")
    if len(df) == 0:
        raise IngestError.broken("header_only", f"{path}: header only, no data rows (columns found: {found}); "
                                 f"export the rows below the header too")
    where = _locator(path, fmt, delimiter, encoding)
    ids: dict[str, pd.Series] = {}
    if id_cols:
        key, ids = series_key(path, df, id_cols, where)
        line = where
        where = lambda i: f"{line(i)}, series '{_show(key.iat[i])}'"  # noqa: E731  (a refusal names the series)
    ts, tz, reading = _parse_time(path, df[time_col], time_col, where, time_format, time_unit, dayfirst)
    values, decimal = _parse_numeric(path, df, names, where, delimiter)
    if id_cols:
        # .array: the strings as they are stored (Arrow), not copied into Python objects
        out = pd.DataFrame({"series_id": key.array, **{c: v.array for c, v in ids.items() if c != "series_id"},
                            "timestamp": ts.to_numpy(), **values})
        out, unsorted = sort_panel(out)
    else:
        out = pd.DataFrame({"timestamp": ts.to_numpy(), **values})
        unsorted = not out["timestamp"].is_monotonic_increasing
        if unsorted:
            out = out.sort_values("timestamp", kind="stable", ignore_index=True)
    return out, {"timezone": tz, "unsorted": bool(unsorted), "decimal": decimal, "time_reading": reading}
