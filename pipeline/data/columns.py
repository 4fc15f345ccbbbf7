"""Which columns of a user's file hold the time and the series to forecast, when the command names them not
(`cellcast ingest --csv sales.csv --name sales`): the one column whose values read as dates, and the one numeric
column besides it and the columns named otherwise (id, features, static), not counting a column of row numbers (a
saved index). A file where either is not exactly one
column is refused in one line naming the candidates and the option that chooses; what was chosen is stated in the
ingest summary and kept in raw.json (`extra.chosen_columns`), so a re-ingest reads the same columns."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from ..errors import IngestError
from .readers import read_head

SAMPLE_ROWS = 2000  # the rows read to tell the columns apart (from the file's start)
READ_SHARE = 0.99  # of a column's non-blank values in the sample that must read as dates (or as numbers)


def choose_columns(
    path: Path, kind: str, delimiter: str | None, time_col: str | None, targets: list[str], named: list[str]
) -> tuple[str, list[str], dict]:
    """(time column, targets, what was chosen: {"time_col": ..., "targets": [...]}) of a file; the given ones kept.
    `named`: the columns given another part (id, features, known ahead, static): neither time nor target."""
    head, delimiter = read_head(path, kind, delimiter, SAMPLE_ROWS)
    free = [c for c in head.columns if c not in named and c not in targets and c != time_col]
    chosen: dict = {}
    if time_col is None:
        dates = [c for c in free if _reads_as_dates(head[c], delimiter)]
        if len(dates) != 1:
            what = "no column reads" if not dates else f"{len(dates)} columns read ({_names(dates)})"
            raise IngestError.broken(
                "time_column",
                f"{path}: --time-col not given and {what} as dates in the first {len(head)} rows "
                f"(columns: {_names(list(head.columns))}); pass --time-col with the time column",
            )
        time_col = chosen["time_col"] = dates[0]
    if not targets:
        numeric = [c for c in free if c != time_col and _reads_as_numbers(head[c], delimiter)]
        if len(numeric) > 1:  # beside a series, a column of row numbers is a saved index
            numeric = [c for c in numeric if not _row_numbers(head[c])]
        if len(numeric) != 1:
            what = "no column holds" if not numeric else f"{len(numeric)} columns hold ({_names(numeric)})"
            raise IngestError.broken(
                "target",
                f"{path}: --target not given and {what} numbers besides the time column '{time_col}'; pass "
                f"--target with the column(s) to forecast"
                + (" (the others may be --features, or --id-col where a column names the series)" if numeric else ""),
            )
        targets = chosen["targets"] = numeric
    return time_col, targets, chosen


def _names(cols: list[str], n: int = 8) -> str:
    shown = ", ".join(f"'{c}'" for c in cols[:n])
    return shown + (f" ... ({len(cols)} in all)" if len(cols) > n else "")


def _values(s: pd.Series) -> pd.Series:
    """A column's non-blank values as stripped strings."""
    txt = s.dropna().astype("string").str.strip()
    return txt[txt != ""]


def _reads_as_dates(s: pd.Series, delimiter: str | None) -> bool:
    if pd.api.types.is_datetime64_any_dtype(s):
        return True
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s) or _reads_as_numbers(s, delimiter):
        return False  # numbers are values ("3,5" too, which dateutil reads as a date); Unix times need --time-col
    txt = _values(s)
    # a date holds a digit: dateutil reads "Monday" as the next Monday
    if txt.empty or txt.str.contains(r"\d", regex=True).mean() < READ_SHARE:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dateutil's "could not infer format" on mixed text
        read = pd.to_datetime(txt, errors="coerce", format="mixed")
    return bool(read.notna().mean() >= READ_SHARE and read.nunique() > 1)


def _row_numbers(s: pd.Series) -> bool:
    """0, 1, 2, ... or 1, 2, 3, ...: a saved index (pandas writes one, unnamed, by default), not a series."""
    read = pd.to_numeric(s, errors="coerce")
    return (
        len(read) > 2
        and read.notna().all()
        and float(read.iloc[0]) in (0.0, 1.0)
        and bool((read.diff()[1:] == 1).all())
    )


def _reads_as_numbers(s: pd.Series, delimiter: str | None) -> bool:
    if pd.api.types.is_bool_dtype(s):
        return False
    if pd.api.types.is_numeric_dtype(s):
        return True
    txt = _values(s)
    if txt.empty:
        return False
    read = pd.to_numeric(txt, errors="coerce")
    if delimiter not in (",", None):  # decimal commas ("3,5") in ';'-separated exports, as the reader takes them
        read = read.fillna(pd.to_numeric(txt.str.replace(",", ".", regex=False), errors="coerce"))
    return bool(read.notna().mean() >= READ_SHARE)
