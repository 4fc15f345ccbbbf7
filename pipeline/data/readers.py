"""Reading a user's CSV or Parquet file into the canonical frame: format, encoding and delimiter
detection, then the time column and the value columns parsed (day-first dates, Unix times, decimal
commas and thousands separators included). Every refusal is an IngestError naming the file, the column
and the first bad line."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, IngestError
from .dates import _parse_time
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
        raise IngestError.broken(
            "binary",
            f"{path}: binary content, not a CSV text file (NUL byte at offset {head.index(0)}); "
            f"export the series as CSV text (UTF-8), or pass --parquet for a Parquet file",
        )
    # cut at the last newline so a multi-byte character is not split
    cut = head if len(head) < _SNIFF_BYTES else head[: head.rfind(b"\n") + 1 or len(head)]
    try:
        return cut.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as e:
        text = cut.decode("latin-1")
        ctrl = sum(1 for c in text if ord(c) < 32 and c not in "\r\n\t") + sum(1 for c in text if 0x7F <= ord(c) < 0xA0)
        if ctrl > 0.05 * max(1, len(text)):
            raise IngestError.broken(
                "binary",
                f"{path}: binary content, not a CSV text file (byte 0x{cut[e.start]:02x} at offset "
                f"{e.start} is not UTF-8 text); export the series as CSV text (UTF-8), "
                "or pass --parquet for a Parquet file",
            ) from None
        return text, "latin-1"


def _sniff_delimiter(path: Path, text: str) -> str:
    # the lines a CSV parser sees (str.splitlines also breaks at \x1c..\x1e, \x85, \u2028)
    lines = [ln for ln in re.split(r"\r\n|\r|\n", text) if ln.strip()][:50]
    if not lines:
        raise IngestError.broken(
            "empty",
            f"{path}: no header and no rows (only blank space); export the series with a "
            f"header line naming its columns",
        )
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
        raise IngestError.broken(
            "delimiter",
            f"{path}: the columns do not split on any of , ; tab | (the header is one column "
            f"'{_show(lines[0])}'); pass --delimiter",
        )
    return best


def _show(text, n: int = 60) -> str:
    """Text from the file, cut to `n` characters, for a one-line message: invisible characters escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text)[:n])


def _show_delim(d: str) -> str:
    return "tab" if d == "\t" else d


def read_csv(path: Path, delimiter: str | None) -> tuple[pd.DataFrame, dict]:
    delimiter, encoding, declared = _csv_dialect(path, delimiter)
    df = _parse_csv(path, delimiter, encoding, declared)
    _check_header(path, df, delimiter, encoding)
    return df, {"delimiter": delimiter, "encoding": encoding}


def csv_parts(path: Path, delimiter: str | None, budget: int) -> tuple[Iterable[Callable[[], pd.DataFrame]], dict]:
    """A CSV in parts of `budget` rows, read one after another as the parts are taken (the parser and its options
    are read_csv's: the parts put together are its frame), and the dialect read_csv reports. No parts (an empty
    list) when the file holds no more than one: it is read whole."""
    delimiter, encoding, declared = _csv_dialect(path, delimiter)
    reader = _parse_csv(path, delimiter, encoding, declared, chunksize=budget)
    chunks = iter(reader)
    first = _next_chunk(path, chunks, delimiter, declared)
    info = {"delimiter": delimiter, "encoding": encoding}
    if first is None:
        reader.close()
        return [], info
    _check_header(path, first, delimiter, encoding)
    second = _next_chunk(path, chunks, delimiter, declared)
    if second is None:
        reader.close()
        return [], info

    def parts() -> Iterator[Callable[[], pd.DataFrame]]:
        with reader:
            chunk: pd.DataFrame | None = first
            ahead: pd.DataFrame | None = second
            while chunk is not None:
                yield _read_already(chunk)
                chunk, ahead = ahead, (None if ahead is None else _next_chunk(path, chunks, delimiter, declared))

    return parts(), info


def read_head(path: Path, kind: str, delimiter: str | None, rows: int) -> tuple[pd.DataFrame, str | None]:
    """The first `rows` rows of a CSV (cells as strings, as read_csv reads them) or a Parquet file or folder (its
    types), and the CSV's delimiter: enough to tell its columns apart without reading it whole."""
    if kind != "csv":
        import pyarrow.dataset as ds

        try:
            data = ds.dataset(str(path), format="parquet", partitioning="hive" if path.is_dir() else None)
            df = _dataset_frame(data.head(rows))
            if not isinstance(df.index, pd.RangeIndex) and df.index.name:
                df = df.reset_index()  # a time index saved by pandas is a column, as read_parquet gives it
        except Exception as e:  # pyarrow raises several types for damaged files
            raise IngestError.broken(
                "parquet", f"{path}: cannot be read as Parquet ({str(e).splitlines()[0][:200]}); export it again"
            ) from None
        return df, None
    delimiter, encoding, declared = _csv_dialect(path, delimiter)
    with _parse_csv(path, delimiter, encoding, declared, chunksize=rows) as reader:
        df = _next_chunk(path, iter(reader), delimiter, declared)
    if df is None:
        df = _parse_csv(path, delimiter, encoding, declared)  # the header alone
    _check_header(path, df, delimiter, encoding)
    return df, delimiter


def _read_already(df: pd.DataFrame) -> Callable[[], pd.DataFrame]:
    return lambda: df


def _next_chunk(path: Path, chunks: Iterator[pd.DataFrame], delimiter: str, declared: bool) -> pd.DataFrame | None:
    with _csv_errors(path, delimiter, declared):
        df = next(chunks, None)
    if df is not None:
        df.columns = [str(c).strip().lstrip("\ufeff") for c in df.columns]
    return df


def _csv_dialect(path: Path, delimiter: str | None) -> tuple[str, str, bool]:
    """(delimiter, encoding, whether the delimiter was given) of a CSV: sniffed from its first bytes unless given."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head.strip():
        raise IngestError.broken(
            "empty",
            f"{path}: empty file ({len(head)} bytes), no header and no rows; export the series "
            f"with a header line naming its columns",
        )
    text, encoding = _decode_head(path, head)
    declared = delimiter is not None
    if delimiter is not None:
        delimiter = {"tab": "\t", "\\t": "\t"}.get(delimiter, delimiter)
        if len(delimiter) != 1:
            raise ConfigError(f"--delimiter '{delimiter}': must be one character (or 'tab')")
    else:
        delimiter = _sniff_delimiter(path, text)
    return delimiter, encoding, declared


def _parse_csv(path: Path, delimiter: str, encoding: str, declared: bool, chunksize: int | None = None):
    """Every cell as a string (parsed later, column by column), names stripped; the parser's failures as one line.
    With `chunksize`: the reader of its parts (pandas' TextFileReader), the same parser and options."""
    with _csv_errors(path, delimiter, declared):
        df = pd.read_csv(
            path,
            sep=delimiter,
            encoding="utf-8-sig" if encoding == "utf-8" else encoding,
            dtype=str,
            keep_default_na=True,
            skipinitialspace=True,
            engine="c",
            chunksize=chunksize,
        )
    if chunksize is not None:
        return df
    # a second byte-order mark (files joined together) is no part of a name
    df.columns = [str(c).strip().lstrip("\ufeff") for c in df.columns]
    return df


@contextmanager
def _csv_errors(path: Path, delimiter: str, declared: bool) -> Iterator[None]:
    """The CSV parser's failures, while it reads the file whole or a part of it, as one line naming the file."""
    try:
        yield
    except pd.errors.EmptyDataError:
        raise IngestError.broken(
            "empty",
            f"{path}: empty file, no header and no rows; export the series with a header line naming its columns",
        ) from None
    except pd.errors.ParserError as e:
        msg = str(e).strip().splitlines()[-1]
        hint = "" if declared else "; pass --delimiter if the sniffed one is wrong"
        raise IngestError.broken(
            "delimiter",
            f"{path}: rows do not split like the header with delimiter '{_show_delim(delimiter)}' ({msg}){hint}",
        ) from None
    except UnicodeDecodeError as e:
        raise IngestError.broken(
            "encoding",
            f"{path}: not UTF-8 text beyond the first {_SNIFF_BYTES} bytes ({e.reason} at byte "
            f"{e.start}); re-save the file as UTF-8",
        ) from None


def _check_header(path: Path, df: pd.DataFrame, delimiter: str, encoding: str) -> None:
    """No name twice in the header as written, and more than one column (else the delimiter is wrong)."""
    try:  # the header as written: pandas renames a repeated name ('load', 'load.1') and would pick one silently
        head = pd.read_csv(
            path,
            sep=delimiter,
            encoding="utf-8-sig" if encoding == "utf-8" else encoding,
            header=None,
            nrows=1,
            dtype=str,
            skipinitialspace=True,
            engine="c",
        ).iloc[0]
        names = [str(c).strip().lstrip("\ufeff") for c in head if isinstance(c, str) and c.strip()]
    except (ValueError, UnicodeDecodeError, IndexError):
        names = list(df.columns)
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise IngestError.broken(
            "header",
            f"{path}: column '{_show(dup[0])}' appears more than once in the header "
            f"(spaces around names ignored); rename one of them",
        )
    if df.shape[1] == 1:
        col = df.columns[0]
        others = [d for d in DELIMITERS if d != delimiter and d in col]
        guess = (
            f": the header looks '{_show_delim(others[0])}'-separated, try --delimiter '{_show_delim(others[0])}'"
            if others
            else "; pass --delimiter"
        )
        raise IngestError.broken(
            "delimiter",
            f"{path}: the columns do not split with delimiter '{_show_delim(delimiter)}' (one column "
            f"'{_show(col)}'){guess}",
        )


def read_parquet(path: Path) -> tuple[pd.DataFrame, dict]:
    size = path.stat().st_size
    if size == 0:
        raise IngestError.broken("empty", f"{path}: empty file (0 bytes), not a Parquet file; export the series again")
    with open(path, "rb") as f:
        magic = f.read(4)
        f.seek(max(0, size - 4))
        tail = f.read(4)
    if magic != b"PAR1" or tail != b"PAR1":
        raise IngestError.broken(
            "parquet",
            f"{path}: not a Parquet file (no PAR1 magic bytes at its start and end); pass "
            f"--csv for a CSV file, or export the Parquet file again (it may be cut short)",
        )
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise IngestError.broken(
            "parquet", f"{path}: cannot be read as Parquet ({str(e).splitlines()[0][:200]}); export it again"
        ) from None
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
            raise IngestError.broken(
                "empty",
                f"{path}: a folder without Parquet files; pass a CSV or Parquet file, or a folder of Parquet files",
            )
        df = _dataset_frame(data.to_table())
    except IngestError:
        raise
    except Exception as e:  # pyarrow raises several types for damaged or mixed files
        raise IngestError.broken(
            "parquet", f"{path}: cannot be read as a Parquet dataset ({str(e).splitlines()[0][:200]})"
        ) from None
    return df, {"files": len(data.files)}


def _dataset_frame(table) -> pd.DataFrame:
    df = table.to_pandas()
    for c in df.columns:
        if isinstance(df[c].dtype, pd.CategoricalDtype):  # a partition folder's value
            df[c] = df[c].astype(str)
    df.columns = [str(c) for c in df.columns]
    return df


def parquet_parts(path: Path, budget: int) -> list[Callable[[], pd.DataFrame]]:
    """A Parquet input in parts of about `budget` rows, each a reader of its own rows (in file order): a folder's
    files, several to a part, or a file's row groups. One part (or none): the input is read whole."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    try:
        if path.is_dir():
            data = ds.dataset(str(path), format="parquet", partitioning="hive")
            sizes = [f.count_rows() for f in data.get_fragments()]
            groups = _consecutive(list(data.files), sizes, budget)

            def folder(files: list[str]) -> Callable[[], pd.DataFrame]:
                part = ds.dataset(files, format="parquet", partitioning="hive", partition_base_dir=str(path))
                return lambda: _dataset_frame(part.to_table())

            return [folder(g) for g in groups] if len(groups) > 1 else []
        meta = pq.ParquetFile(str(path)).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        groups = _consecutive(list(range(meta.num_row_groups)), sizes, budget)
    except Exception:  # not readable as parts: the whole read says why, in its own words
        return []

    def row_groups(ids: list[int]) -> Callable[[], pd.DataFrame]:
        def read() -> pd.DataFrame:
            df = pq.ParquetFile(str(path)).read_row_groups(ids).to_pandas()
            if not isinstance(df.index, pd.RangeIndex) and df.index.name:
                df = df.reset_index()
            df.columns = [str(c) for c in df.columns]
            return df

        return read

    return [row_groups(g) for g in groups] if len(groups) > 1 else []


def _consecutive(items: list, sizes: list[int], budget: int) -> list[list]:
    """Items in order, grouped until a group holds at least `budget` rows."""
    groups: list[list] = [[]]
    rows = 0
    for item, n in zip(items, sizes):
        if rows >= budget:
            groups.append([])
            rows = 0
        groups[-1].append(item)
        rows += n
    return [g for g in groups if g]


def _locator(path: Path, fmt: str, delimiter: str | None = None, encoding: str | None = None, first_row: int = 0):
    """Where row i of the frame is in the input: for a CSV the physical line (header = line 1; blank lines and
    quoted line breaks counted, as pandas skips or joins them), found only when a refusal needs it. `first_row`: where
    the frame starts in the file (a part of it)."""
    if fmt != "csv":  # first_row: where a part of the file starts
        return lambda i: f"row {first_row + i}"

    def where(i: int) -> str:
        try:
            with open(
                path, newline="", encoding="utf-8-sig" if encoding in (None, "utf-8") else encoding, errors="replace"
            ) as f:
                reader = csv.reader(f, delimiter=delimiter or ",")
                prev, k = 0, -2  # k: data row index, -1 at the header
                for rec in reader:
                    start, prev = prev + 1, reader.line_num
                    if not any(x.strip() for x in rec):
                        continue
                    k += 1
                    if k == first_row + i:
                        return f"line {start}"
        except (OSError, csv.Error):
            pass
        return f"line {first_row + i + 2}"

    return where


def _parse_numeric(
    path: Path, df: pd.DataFrame, cols: list[str], where, delimiter: str | None
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
                num, bad, decimal = (
                    pd.to_numeric(txt.str.replace(",", "", regex=False), errors="coerce"),
                    bad & False,
                    "." if decimal is None else decimal,
                )
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            mixed = " (the column writes decimals with '.')" if point and "," in str(txt.iloc[i]) else ""
            raise IngestError.broken(
                "numeric",
                f"{path}: column '{c}': {int(bad.sum())} non-numeric values{mixed} "
                f"(first {str(txt.iloc[i])[:40]!r} at {where(i)}): fix or blank those cells (blank "
                f"cells are filled or refused by the gap policy, params.yaml ingest)",
                int(bad.sum()),
            )
        out[c] = num.astype("float64").to_numpy()
    return out, decimal


def canonical_frame(
    path: Path,
    df: pd.DataFrame,
    time_col: str,
    targets: list[str],
    features: list[str],
    fmt: str,
    delimiter: str | None,
    time_format: str | None = None,
    time_unit: str | None = None,
    dayfirst: bool | None = None,
    encoding: str | None = None,
    id_cols: list[str] | None = None,
    first_row: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """The file's frame (of a file read in parts: the part starting at row `first_row`) -> the canonical frame, and
    what was learnt reading it (zone, order, decimal mark,
    how the time column was read: `time_reading`). With `id_cols`, a panel: `series_id` and the id columns
    first, sorted by (series_id, timestamp); a refusal names the series of the row it points at."""
    names = targets + features
    found = ", ".join(_show(c) for c in df.columns[:30]) + (
        f" ... ({len(df.columns)} in all)" if len(df.columns) > 30 else ""
    )
    if time_col not in df.columns:
        raise IngestError.broken(
            "time_column", f"{path}: no time column '{time_col}' (columns found: {found}); pass --time-col"
        )
    for kind, cols in (("target", targets), ("feature", features), ("id", id_cols or [])):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            opt = {"target": "--target", "feature": "--features", "id": "--id-col"}[kind]
            raise IngestError.broken(
                "column_missing",
                f"{path}: {kind} column '{missing[0]}' not found (columns found: {found}); pass {opt} with one of them",
            )
    if len(df) == 0:
        raise IngestError.broken(
            "header_only",
            f"{path}: header only, no data rows (columns found: {found}); export the rows below the header too",
        )
    where = _locator(path, fmt, delimiter, encoding, first_row)
    ids: dict[str, pd.Series] = {}
    if id_cols:
        key, ids = series_key(path, df, id_cols, where)
        line = where
        where = lambda i: f"{line(i)}, series '{_show(key.iat[i])}'"  # noqa: E731  (a refusal names the series)
    ts, tz, reading = _parse_time(path, df[time_col], time_col, where, time_format, time_unit, dayfirst)
    values, decimal = _parse_numeric(path, df, names, where, delimiter)
    if id_cols:
        # .array: the strings as they are stored (Arrow), not copied into Python objects
        out = pd.DataFrame(
            {
                "series_id": key.array,
                **{c: v.array for c, v in ids.items() if c != "series_id"},
                "timestamp": ts.to_numpy(),
                **values,
            }
        )
        out, unsorted = sort_panel(out)
    else:
        out = pd.DataFrame({"timestamp": ts.to_numpy(), **values})
        unsorted = not out["timestamp"].is_monotonic_increasing
        if unsorted:
            out = out.sort_values("timestamp", kind="stable", ignore_index=True)
    return out, {"timezone": tz, "unsorted": bool(unsorted), "decimal": decimal, "time_reading": reading}
