"""Panels: many series in one long frame (ingest --id-col).

The series key is the tuple of the id columns' values; `series_id` is that key as one string (the values
joined by "/"; a file whose tuples would join to the same string is refused). A canonical panel frame is
`series_id`, the id columns (strings, as read), `timestamp`, then the value columns, sorted by
(series_id, timestamp). Its Parquet file keeps whole series per row group (up to `ingest.partition_rows`
rows; a longer series gets one of its own): a row group is what a reader or a validation worker takes at
a time (catalog.read_partition, catalog.read_panel). Series may start and end at different times.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..catalog import SERIES_ID
from ..errors import ConfigError, IngestError
from ..files import parquet_groups
from .frequency import gap_stats, infer_freq
from .schedule import Schedule

JOIN = "/"
_VOTERS = 25  # the longest series whose own frequency is inferred; the most rows decide


def check_id_options(id_cols: list[str], time_col: str | None, names: list[str]) -> None:
    """The id columns against the other options: distinct, none a time/target/feature column."""
    dup = sorted({c for c in id_cols if id_cols.count(c) > 1})
    if dup:
        raise ConfigError(f"--id-col '{dup[0]}': listed more than once")
    for c in id_cols:
        if c == time_col:
            raise ConfigError(f"--id-col '{c}': is the time column; a series id is another column")
        if c in names:
            raise ConfigError(f"--id-col '{c}': is also a target or feature; a series id is not a value")
        if c == "timestamp":
            raise ConfigError("--id-col 'timestamp': the name is reserved for the time column")
    if SERIES_ID in id_cols and len(id_cols) > 1:
        raise ConfigError(
            f"--id-col '{SERIES_ID}': the name is reserved for the joined key when several id columns "
            f"are given; rename that column"
        )
    if SERIES_ID in names:
        raise ConfigError(
            f"column '{SERIES_ID}': the name is reserved for a panel's series key; it cannot be a target or feature"
        )


def series_key(path: Path, df: pd.DataFrame, id_cols: list[str], where) -> tuple[pd.Series, dict[str, pd.Series]]:
    """The series_id of every row, and each id column as clean strings. A row without an id is refused
    (naming the column, the count and the first line); so is a set of id values whose joined strings collide."""
    cleaned = {}
    for c in id_cols:
        s = df[c]
        txt = s.astype("string").str.strip()
        bad = (txt.isna() | (txt == "")).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise IngestError.broken(
                "id_missing",
                f"{path}: id column '{c}': {int(bad.sum())} rows have no value (first "
                f"at {where(i)}): every row needs the id of its series; fill or remove those rows",
                int(bad.sum()),
            )
        cleaned[c] = txt.astype(str)
    if len(id_cols) == 1:
        return cleaned[id_cols[0]].rename(SERIES_ID), cleaned
    first, *rest = (cleaned[c] for c in id_cols)
    key = first.str.cat(rest, sep=JOIN).rename(SERIES_ID)
    tuples = pd.DataFrame(cleaned).drop_duplicates()
    joined = tuples.astype(str).agg(JOIN.join, axis=1)
    clash = joined.duplicated(keep=False)
    if clash.any():
        a, b = tuples[clash].iloc[0], tuples[clash].iloc[1]
        raise IngestError.broken(
            "id_collision",
            f"{path}: id columns {', '.join(repr(c) for c in id_cols)}: values "
            f"{tuple(a)} and {tuple(b)} give the same series id '{joined[clash].iloc[0]}' (the ids "
            f"are joined with '{JOIN}'); make them distinct at the source",
            int(clash.sum()),
        )
    return key, cleaned


def _codes(frame: pd.DataFrame) -> np.ndarray:
    # integer codes of series_id: compared as numbers, not as millions of Python strings
    return pd.factorize(frame[SERIES_ID])[0]


def sort_panel(frame: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """Sorted by (series_id, timestamp), stably (duplicated timestamps keep the file's order); and whether it was
    not."""
    ordered = True
    if len(frame) > 1:
        codes = _codes(frame)
        ts = frame["timestamp"].to_numpy()
        same = codes[1:] == codes[:-1]
        ordered = bool(frame[SERIES_ID].is_monotonic_increasing and (ts[1:][same] >= ts[:-1][same]).all())
    if ordered:
        return frame.reset_index(drop=True), False
    return frame.sort_values([SERIES_ID, "timestamp"], kind="stable", ignore_index=True), True


def series_bounds(frame: pd.DataFrame) -> list[tuple[str, int, int]]:
    """(series_id, first row, end row) of each series of a sorted panel frame."""
    if not len(frame):
        return []
    codes = _codes(frame)
    cut = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(codes)]])
    sid = frame[SERIES_ID]
    return [(str(sid.iat[a]), int(a), int(b)) for a, b in zip(starts, ends)]


def group_rows(bounds: list[tuple[str, int, int]], budget: int) -> list[tuple[int, int]]:
    """Rows [start, end) of each row group: whole series, consecutive, up to `budget` rows (a longer series alone)."""
    groups: list[tuple[int, int]] = []
    start: int | None = None
    end = 0  # read only once a group has started (and set with it)
    for _, a, b in bounds:
        if start is not None and b - start > budget:
            groups.append((start, end))
            start = None
        if start is None:
            start = a
        end = b
    if start is not None:
        groups.append((start, end))
    return groups


def write_panel(frame: pd.DataFrame, path: Path, budget: int) -> int:
    """A sorted panel frame as Parquet, whole series per row group; returns the number of row groups."""
    groups = group_rows(series_bounds(frame), budget)
    with parquet_groups(path) as add:
        for a, b in groups:
            add(frame.iloc[a:b])
    return len(groups)


def infer_panel_freq(frame: pd.DataFrame, source: str) -> str:
    """The panel's frequency: each of the longest series' own (frequency.infer_freq), the one most rows agree on.
    Series too short or too irregular to tell are passed over; when none can tell, the longest one's refusal."""
    return decide_freq(*freq_votes(frame, source))


def freq_votes(frame: pd.DataFrame, source: str) -> tuple[Counter, IngestError | None]:
    """The frequencies of a panel frame's longest series, each weighted by its rows, and the first refusal (of a
    series that could not tell): what decide_freq decides on; the votes of parts of a panel add up."""
    sizes = frame.groupby(SERIES_ID, sort=False).size().sort_values(ascending=False, kind="stable")
    pos = frame.groupby(SERIES_ID, sort=False).indices
    votes: Counter = Counter()
    first_error = None
    ts = frame["timestamp"]
    for sid in sizes.index[:_VOTERS]:
        try:
            votes[infer_freq(ts.iloc[pos[sid]], f"{source}: series '{sid}'")] += int(sizes[sid])
        except IngestError as e:
            first_error = first_error or e
    return votes, first_error


def decide_freq(votes: Counter, first_error: IngestError | None) -> str:
    """The frequency most rows vote for; none: the first refusal."""
    if not votes:
        raise IngestError.broken("frequency", f"{first_error}; or --freq with --agg to put the readings on a grid")
    return votes.most_common(1)[0][0]


def describe_series(
    frame: pd.DataFrame, freq: str, variables: list[str], id_cols: list[str], schedule: Schedule | None = None
) -> dict:
    """Per series of a sorted panel frame: its ids, rows, rows with every value, start, end, gaps, duplicates."""
    out = {}
    complete = frame[variables].notna().all(axis=1).to_numpy()
    ts = frame["timestamp"]
    for sid, a, b in series_bounds(frame):
        t = ts.iloc[a:b]
        out[sid] = {
            "ids": {c: str(frame[c].iat[a]) for c in id_cols if c != SERIES_ID} or {SERIES_ID: sid},
            "rows": b - a,
            "observed_rows": int(complete[a:b].sum()),
            "start": str(t.iat[0]),
            "end": str(t.iat[-1]),
            "gaps": gap_stats(t.drop_duplicates(), freq, schedule),
            "duplicates": int(t.duplicated().sum()),
        }
    return out


def pooled(series: dict) -> dict:
    """A panel's totals over its series, in raw.json's single-series fields (gaps summed, the longest kept)."""
    gaps = [s["gaps"] for s in series.values()]
    return {
        "rows": sum(s["rows"] for s in series.values()),
        "start": min((s["start"] for s in series.values()), default=None),
        "end": max((s["end"] for s in series.values()), default=None),
        "gaps": {
            "count": sum(g["count"] for g in gaps),
            "missing_steps": sum(g["missing_steps"] for g in gaps),
            "longest_steps": max((g["longest_steps"] for g in gaps), default=0),
            "off_grid": sum(g["off_grid"] for g in gaps),
        },
        "duplicates": sum(s["duplicates"] for s in series.values()),
    }
