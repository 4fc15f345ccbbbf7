"""The live forecast log: every answer the service computes (served, or a shadow answer nobody saw), as Parquet
rows under <forecasts>/<dataset>/live/, for the live monitor to score against the actuals as they arrive.

One row per (request, series, step): request_id, logged_at (UTC), model, dataset, model_version, role (the alias
the version was loaded through), served, id (a panel's series, else null), origin (the request's last input
timestamp, naive like the batch forecasts'), timestamp (the step's), step (1..horizon), one float64 column per
target and `<target>_q<level>` per quantile level (the batch forecast's naming, its median left out the same way).

Requests only hand their arrays to `LiveLog.add` (a list append under a lock); one background thread turns them
into rows and writes a file per dataset every `flush_s` seconds, or once `max_rows` rows wait, and on `close`.
Files are named `<UTC stamp>-<pid>-<seq>.parquet`, written under a temporary name and renamed (a reader never
sees half a file). When the writer falls behind by more than `max_pending` rows, new answers are dropped and
counted rather than held in memory.

A file every few seconds is some 17,000 a day: once an hour the writer folds each earlier UTC day's files of a
folder into one (`<day>T000000000000Z-day-<pid>.parquet`: written, then its sources removed; a reader that meets
both counts each row once, by its request id) and removes the days older than `keep_days` (None: kept for ever).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..files import utc_stamp
from .forecast import quantile_column

log = logging.getLogger(__name__)

MAX_ROWS = 5000


@dataclass(frozen=True)
class Answer:
    """One computed answer, as the request left it: arrays, not yet rows."""

    request_id: str
    logged_at: datetime
    model: str
    dataset: str
    version: str
    role: str
    served: bool
    y: np.ndarray  # (n, horizon, T), in the series' own units
    q: np.ndarray | None  # (n, horizon, T, Q) or None
    targets: tuple[str, ...]
    levels: tuple[float, ...]
    stamps: list  # per series: the steps' ISO timestamps, or None
    origins: list  # per series: the last input timestamp as sent, or None
    ids: list | None  # per series: the panel id, or None for a one-series model

    @property
    def rows(self) -> int:
        return int(self.y.shape[0] * self.y.shape[1])


def _naive(values: list) -> pa.Array:
    """ISO strings (or None) -> timestamp[ns] on the data's clock: a zone is converted to UTC and dropped. One
    pandas call for a whole file's rows: per answer it would cost more than the request itself."""
    ts = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601").dt.tz_localize(None)
    return pa.array(ts.astype("datetime64[ns]"), type=pa.timestamp("ns"))


def rows_table(answers: list[Answer]) -> pa.Table:
    """Answers' rows, in the column order of the contract. Answers of one model shape (targets, quantile levels)
    are turned into columns together; shapes differ between a champion and a challenger: missing columns are null."""
    groups: dict[tuple, list[Answer]] = {}
    for a in answers:
        groups.setdefault((a.targets, a.levels if a.q is not None else (), a.y.shape[1]), []).append(a)
    tables = []
    for (targets, levels, h), group in groups.items():
        rows = np.asarray([a.rows for a in group])
        series = [a.y.shape[0] for a in group]

        def each(values: list, rows=rows) -> np.ndarray:  # one value per answer, on each of its rows
            return np.repeat(np.asarray(values, dtype=object), rows)

        stamps = [s for a in group for st in a.stamps for s in (st if st is not None else [None] * h)]
        cols: dict[str, pa.Array] = {
            "request_id": pa.array(each([a.request_id for a in group]), pa.string()),
            "logged_at": pa.array(
                np.repeat(
                    np.asarray([a.logged_at.astimezone(UTC).replace(tzinfo=None) for a in group], "datetime64[ns]"),
                    rows,
                ),
                pa.timestamp("ns", tz="UTC"),
            ),
            "model": pa.array(each([a.model for a in group]), pa.string()),
            "dataset": pa.array(each([a.dataset for a in group]), pa.string()),
            "model_version": pa.array(each([a.version for a in group]), pa.string()),
            "role": pa.array(each([a.role for a in group]), pa.string()),
            "served": pa.array(np.repeat([a.served for a in group], rows), pa.bool_()),
            "id": pa.array(
                np.repeat(np.asarray([i for a in group for i in (a.ids or [None] * len(a.y))], dtype=object), h),
                pa.string(),
            ),
            "origin": _naive(list(np.repeat(np.asarray([o for a in group for o in a.origins], dtype=object), h))),
            "timestamp": _naive(stamps),
            "step": pa.array(np.tile(np.arange(1, h + 1, dtype=np.int32), sum(series)), pa.int32()),
        }
        y = np.concatenate([np.asarray(a.y, np.float64) for a in group])
        for j, t in enumerate(targets):
            cols[t] = pa.array(y[:, :, j].reshape(-1), pa.float64())
        if levels:
            q = np.concatenate([np.asarray(a.q, np.float64) for a in group])
            for j, t in enumerate(targets):
                for k, level in enumerate(levels):
                    if level != 0.5:  # as the batch forecast: the point forecast stands for the median
                        cols[quantile_column(t, level)] = pa.array(q[:, :, j, k].reshape(-1), pa.float64())
        tables.append(pa.table(cols))
    return pa.concat_tables(tables, promote_options="default")


class LiveLog:
    """The background writer. `folder(dataset)` -> the dataset's live folder; `on_written(dataset, rows)` and
    `on_dropped(rows)` report to the metrics."""

    def __init__(
        self,
        folder: Callable[[str], Path],
        flush_s: float = 5.0,
        max_rows: int = MAX_ROWS,
        max_pending: int = 20 * MAX_ROWS,
        on_written: Callable[[str, int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        keep_days: float | None = None,
        tidy_every_s: float = 3600.0,
    ):
        self.folder, self.flush_s, self.max_rows, self.max_pending = folder, flush_s, max_rows, max_pending
        self.keep_days, self.tidy_every_s = keep_days, tidy_every_s
        self._tidied: dict[str, float] = {}  # folder -> when it was last tidied (monotonic)
        self.on_written = on_written or (lambda dataset, rows: None)
        self.on_dropped = on_dropped or (lambda rows: None)
        self._pending: list[Answer] = []
        self._rows = 0
        self._seq = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="cellcast-live-log", daemon=True)
        self._thread.start()

    def add(self, answer: Answer) -> None:
        with self._cond:
            if self._stop or self._rows + answer.rows > self.max_pending:
                self.on_dropped(answer.rows)
                return
            self._pending.append(answer)
            self._rows += answer.rows
            if self._rows >= self.max_rows:
                self._cond.notify()

    def flush(self) -> list[Path]:
        """Write what waits now (the writer thread does this on its own; tests and shutdown call it)."""
        with self._cond:
            batch, self._pending, self._rows = self._pending, [], 0
        return self._write(batch)

    def close(self) -> None:
        """Stop the thread and write what waits."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._stop and self._rows < self.max_rows:
                    self._cond.wait(self.flush_s)
                if self._stop:
                    return
            try:
                self.flush()
            except Exception:  # the writer must outlive a surprise; the rows are counted as dropped
                log.exception("live log flush failed")

    def _write(self, batch: list[Answer]) -> list[Path]:
        by_dataset: dict[str, list[Answer]] = {}
        for a in batch:
            by_dataset.setdefault(a.dataset, []).append(a)
        written = []
        for dataset, answers in by_dataset.items():
            rows = sum(a.rows for a in answers)
            try:
                table = rows_table(answers)
                d = self.folder(dataset)
                d.mkdir(parents=True, exist_ok=True)
                self._seq += 1
                path = d / f"{utc_stamp()}-{os.getpid()}-{self._seq}.parquet"
                tmp = d / f".{path.name}.tmp"
                pq.write_table(table, tmp)
                os.replace(tmp, path)
            except Exception as e:
                log.error("live log: %d rows of %s not written: %s", rows, dataset, e)
                self.on_dropped(rows)
                continue
            written.append(path)
            self.on_written(dataset, rows)
            if time.monotonic() - self._tidied.get(str(d), -math.inf) >= self.tidy_every_s:
                self._tidied[str(d)] = time.monotonic()
                try:
                    tidy(d, self.keep_days)
                except Exception as e:  # noqa: BLE001 - tidying is retried at the next hour; the rows are written
                    log.warning("live log: %s not tidied: %s", d, e)
        return written


def _day(path: Path) -> str | None:
    """The UTC day (YYYYMMDD) a live file's name starts with, or None for a name this log did not write."""
    head = path.name.split("-", 1)[0]
    return head[:8] if len(head) == 22 and head[8] == "T" and head[:8].isdigit() else None


def tidy(folder: Path, keep_days: float | None, today: datetime | None = None) -> dict[str, int]:
    """Fold each UTC day before `today` into one file and remove the days older than `keep_days`:
    {"folded": files merged away, "removed": files deleted}. Safe beside writers: only past days are touched, and a
    file already folded (or removed) by another process is skipped."""
    now = today or datetime.now(UTC)
    today_s = now.strftime("%Y%m%d")
    oldest = (now - timedelta(days=keep_days)).strftime("%Y%m%d") if keep_days is not None else None
    days: dict[str, list[Path]] = {}
    for f in sorted(Path(folder).glob("*.parquet")):
        day = _day(f)
        if day is not None and day < today_s:
            days.setdefault(day, []).append(f)
    folded = removed = 0
    for day, files in days.items():
        if oldest is not None and day < oldest:
            for f in files:
                f.unlink(missing_ok=True)
            removed += len(files)
        elif len(files) > 1:
            tables, read = [], []
            for f in files:
                try:
                    tables.append(pq.read_table(f))
                    read.append(f)
                except FileNotFoundError:  # folded by another process meanwhile
                    continue
                except Exception as e:  # noqa: BLE001 - a damaged file stays as it is, for the reader to report
                    log.warning("live log: %s not folded: %s", f, str(e).splitlines()[0] if str(e) else e)
            if len(read) < 2:
                continue
            path = Path(folder) / f"{day}T000000000000Z-day-{os.getpid()}.parquet"
            tmp = path.with_name(f".{path.name}.tmp")
            pq.write_table(pa.concat_tables(tables, promote_options="default"), tmp)
            os.replace(tmp, path)
            for f in read:
                if f != path:
                    f.unlink(missing_ok=True)
                    folded += 1
    return {"folded": folded, "removed": removed}
