"""The window stage: data/NAME/validated.parquet -> data/NAME/windows.npz + windows.json.

One series' windows are built here (`build_windows`); a panel's in data/panel_windows.py. Where the windows lie
(sizes, splits, usable windows, scalers): data/splits.py. What a window set is (strided views, batches, the
known-future block): data/windowset.py.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..catalog import is_panel, read_validated, read_validated_meta, window_paths
from ..config import Settings
from ..errors import DataValidationError, NotFoundError
from . import calendar as _calendar
from .frequency import seasons_for
from .panel_windows import COLD, PanelWindowSet, window_panel
from .splits import (
    declared_bounds,
    filled_mask,
    profile_bounds,
    resolve_window,
    split_for,
    usable_windows,
    window_shortfall,
    window_starts,
)
from .windowset import SPLITS, WindowMeta, WindowSet, future_table


def build_windows(
    frame: pd.DataFrame,
    *,
    variables: list[str],
    targets: list[str],
    freq: str,
    settings: Settings,
    data_md5: str | None = None,
    future_features: list[str] | None = None,
    schedule: dict | None = None,
) -> WindowSet:
    """A validated series -> its window set: the windows of each split, the scaler and plausible ranges of its
    observed training cells, its known-future table and the metadata that travels with a model."""
    lookback, horizon = resolve_window(settings, freq, len(frame), schedule)
    values = frame[variables].to_numpy(dtype=np.float32)
    filled = filled_mask(frame, variables)
    val_start, test_start = split_for(len(values), horizon, settings)
    target_idx = [variables.index(t) for t in targets]
    starts = _split_starts(values, filled, target_idx, (lookback, horizon), (val_start, test_start), settings)
    mean, std, value_bounds = _train_scaler(frame, values, filled, variables, val_start, settings)
    ts = frame["timestamp"].to_numpy()
    future, fnames, fkinds, cal = _series_future(frame, ts, freq, val_start, future_features or [], settings)
    at = lambda i: str(pd.Timestamp(ts[i]))  # noqa: E731  (readable stamps in windows.json and messages)
    meta = WindowMeta(
        name=settings.dataset,
        variables=list(variables),
        targets=list(targets),
        freq=freq,
        lookback=lookback,
        horizon=horizon,
        stride=settings.window.stride,
        rows=len(values),
        bounds={"val": int(val_start), "test": int(test_start)},
        counts={k: int(len(v)) for k, v in starts.items()},
        mean=[float(x) for x in mean],
        std=[float(x) for x in std],
        start=at(0),
        end=at(-1),
        split_times={
            "train": [at(0), at(val_start - 1)],
            "val": [at(val_start), at(test_start - 1)],
            "test": [at(test_start), at(-1)],
        },
        data_md5=data_md5,
        seasons=seasons_for(freq, len(values), schedule),
        value_bounds=value_bounds,
        future_names=fnames,
        future_kinds=fkinds,
        calendar=cal if fnames else {},
        schedule=schedule,
    )
    return WindowSet(values, ts, meta, starts, filled, future)


def _split_starts(
    values: np.ndarray,
    filled: np.ndarray | None,
    target_idx: list[int],
    window: tuple[int, int],
    splits: tuple[int, int],
    settings: Settings,
) -> dict[str, np.ndarray]:
    """The start rows of each split's usable windows; DataValidationError when the splits hold fewer than params.yaml
    `ingest` asks."""
    (lookback, horizon), (val_start, test_start), rows = window, splits, len(values)
    valid = usable_windows(values, filled, lookback, horizon, target_idx)
    starts = window_starts(rows, lookback, horizon, val_start, test_start, settings.window.stride, valid)
    short = window_shortfall(starts, horizon, settings)
    if short:
        rule, what = short
        raise DataValidationError(
            f"{settings.dataset}: {rows} rows give {what} (lookback {lookback}, horizon {horizon}): use a longer "
            f"series, a shorter window.lookback / window.horizon or a lower ingest.{rule} in params.yaml"
        )
    return starts


def with_lookback(ws: WindowSet, lookback: int, settings: Settings) -> WindowSet:
    """The same single series windowed on another lookback: its rows, splits, scaler and known-future table; each
    split's windows those the lookback leaves (a shorter one keeps the first training windows a longer one loses)."""
    m = ws.meta
    valid = usable_windows(ws.values, ws.filled, lookback, m.horizon, m.target_idx)
    starts = window_starts(m.rows, lookback, m.horizon, m.bounds["val"], m.bounds["test"], m.stride, valid)
    meta = replace(m, lookback=lookback, counts={k: int(len(v)) for k, v in starts.items()})
    return WindowSet(ws.values, ws.timestamps, meta, starts, ws.filled, ws.future)


def _train_scaler(
    frame: pd.DataFrame,
    values: np.ndarray,
    filled: np.ndarray | None,
    variables: list[str],
    val_start: int,
    settings: Settings,
) -> tuple[np.ndarray, np.ndarray, dict[str, list[float]]]:
    """The mean, the spread (1 for a constant column) and the plausible range of each variable, from the observed
    cells of the training rows; a range declared in params.yaml (validate.bounds) wins over the profiled one."""
    train = values[:val_start]
    observed = frame[variables].iloc[:val_start]
    if filled is not None:  # observed cells only
        train = np.where(filled[:val_start], np.nan, train)
        observed = observed.mask(filled[:val_start])
    declared = declared_bounds(variables, settings)
    value_bounds = {**profile_bounds(observed, variables, settings.validate_.profile_tolerance), **declared}
    mean = np.nanmean(train, axis=0)
    std = np.nanstd(train, axis=0)
    std = np.where(~np.isfinite(std) | (std < 1e-8), 1.0, std)  # a constant column scales by 1
    return mean, std, value_bounds


def _series_future(
    frame: pd.DataFrame, ts: np.ndarray, freq: str, val_start: int, future_features: list[str], settings: Settings
) -> tuple[np.ndarray | None, list[str], list[str], dict]:
    """The series' known-future table (future_table) with its column names, kinds and the calendar settings resolved
    for it; DataValidationError naming a known-future column the data lacks."""
    missing = [c for c in future_features if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{settings.dataset}: known-future column(s) {', '.join(missing)} not in the data: re-ingest "
            f"with them (--future-features)"
        )
    # calendar.parts auto: from the frequency and the time the training rows cover
    cal = _calendar.resolved(settings.calendar, freq, pd.Timestamp(ts[val_start - 1]) - pd.Timestamp(ts[0]))
    future, fnames, fkinds = future_table(ts, freq, cal, {c: frame[c].to_numpy(np.float32) for c in future_features})
    return future, fnames, fkinds, cal


def save_windows(ws: WindowSet, settings: Settings) -> tuple[Path, Path]:
    settings.check_dataset(ws.meta.name)
    npz, js = window_paths(settings)
    npz.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if ws.filled is None else {"filled": ws.filled}
    if ws.future is not None:
        extra["future"] = ws.future
    if isinstance(ws, PanelWindowSet):
        extra.update(series_offsets=ws.offsets, series_lengths=ws.lengths, series_train_end=ws.train_end)
    stamps = ws.timestamps.astype("datetime64[ns]", copy=False).view(np.int64)  # no copy of a mapped set
    arrays = {"values": ws.values, "timestamps": stamps, **{f"starts_{k}": v for k, v in ws.starts.items()}, **extra}
    # a new file put in place, not the old one rewritten: a process that maps the old set (load_windows) keeps it
    tmp = npz.with_name(f".{npz.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub reads **arrays as its allow_pickle flag
    os.replace(tmp, npz)
    js.write_text(json.dumps(asdict(ws.meta), indent=2))
    return npz, js


def load_windows(settings: Settings) -> WindowSet:
    name = settings.dataset
    npz, js = window_paths(settings)
    if not npz.is_file() or not js.is_file():
        raise NotFoundError(f"{npz}: no window set for dataset '{name}': run `cellcast window {name}` first")
    meta = WindowMeta(**json.loads(js.read_text()))
    if meta.panel:
        return _mapped_panel(npz, meta)
    with np.load(npz) as z:
        values = z["values"]
        ts = z["timestamps"].astype("datetime64[ns]")
        starts = {k: z[f"starts_{k}"] for k in SPLITS}
        filled = z["filled"] if "filled" in z.files else None
        future = z["future"] if "future" in z.files else None
    return WindowSet(values, ts, meta, starts, filled, future)


def _mapped_panel(npz: Path, meta: WindowMeta) -> PanelWindowSet:
    """A panel's window set with its arrays memory-mapped from windows.npz (np.savez stores them uncompressed), not
    read into memory: a batch reads the rows it gathers, and the pages stay the kernel's page cache."""
    z = _npz_arrays(npz)
    return PanelWindowSet(
        z["values"],
        z["timestamps"].view("datetime64[ns]"),
        meta,
        {k: z[f"starts_{k}"] for k in (*SPLITS, COLD)},
        z.get("filled"),
        z.get("future"),
        offsets=np.array(z["series_offsets"]),
        lengths=np.array(z["series_lengths"]),
        train_end=np.array(z["series_train_end"]),
    )


def _npz_arrays(npz: Path) -> dict[str, np.ndarray]:
    """Every array of an uncompressed .npz, memory-mapped copy-on-write (writable, as a set's arrays must be; the
    file is never changed); a compressed member is read whole."""
    import zipfile

    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(npz) as zf, open(npz, "rb") as f:
        for info in zf.infolist():
            key = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                with zf.open(info) as member:
                    out[key] = np.lib.format.read_array(member)
                continue
            f.seek(info.header_offset)
            local = f.read(30)  # the local file header: its name and extra field lengths at bytes 26-29
            f.seek(
                info.header_offset
                + 30
                + int.from_bytes(local[26:28], "little")
                + int.from_bytes(local[28:30], "little")
            )
            version = np.lib.format.read_magic(f)
            header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            shape, fortran, dtype = header[version](f) if version in header else ((), False, np.dtype(object))
            if dtype.hasobject or not shape or 0 in shape:
                f.seek(info.header_offset)
                with zf.open(info) as member:
                    out[key] = np.lib.format.read_array(member)
                continue
            at = f.tell()
            out[key] = (
                np.memmap(npz, dtype, "c", offset=at, shape=shape, order="F")
                if fortran
                else np.memmap(npz, dtype, "c", offset=at, shape=shape)
            )
    return out


SPILL_PREFIX = ".windows-"  # a panel's window set is built in a folder named so, with the building process's id


def remove_dead_spills(folder: Path) -> list[Path]:
    """Removes the build folders that window stages left in `folder` when they were killed midway (their process is
    gone: a live one's folder is its own, mid-build); returns what it removed."""
    gone = []
    for d in folder.glob(f"{SPILL_PREFIX}*"):
        pid = d.name.removeprefix(SPILL_PREFIX).split("-")[0]
        if not d.is_dir() or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(d, ignore_errors=True)
        gone.append(d)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or not a process id this machine can hold: left alone
    return True


def window_dataset(settings: Settings) -> WindowSet:
    """The window stage: data/NAME/validated.parquet -> data/NAME/windows.npz + windows.json (a panel: its
    series side by side, PanelWindowSet)."""
    validated = read_validated_meta(settings)
    if is_panel(validated):
        # the set is built in files beside windows.npz (flat memory in the number of series), then read from it
        parent = window_paths(settings)[0].parent
        parent.mkdir(parents=True, exist_ok=True)
        remove_dead_spills(parent)
        with tempfile.TemporaryDirectory(dir=parent, prefix=f"{SPILL_PREFIX}{os.getpid()}-") as spill:
            panel = window_panel(validated, settings, spill=Path(spill))
            save_windows(panel, settings)
            del panel
        return load_windows(settings)
    frame, meta = read_validated(settings)
    variables = list(meta["targets"]) + list(meta.get("features") or [])
    ws = build_windows(
        frame,
        variables=variables,
        targets=list(meta["targets"]),
        freq=meta["freq"],
        settings=settings,
        data_md5=meta.get("data_md5"),
        future_features=list(meta.get("future_features") or []),
        schedule=meta.get("schedule"),
    )
    save_windows(ws, settings)
    return ws
