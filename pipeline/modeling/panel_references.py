"""The classical references on a panel: MSTL / ETS / Theta per series (modeling/classical.py, the same cheaper fitting
as one series gets: fitted once before a series' first test origin and rolled forward), aggregated across series.

Each series' references are fitted on its own rows in its own units (the panel's per-series scaling undone), forecast
from its test origins a horizon apart (as promotion scores them), and their forecasts put back in the panel's
per-series units, where an absolute error is that series' MASE. The aggregate: the pooled MASE over every scored
window (what the candidates' test MASE is), the mean and median of the per-series MASE, and, given the global model's
losses on the same windows, the share of series where the model beats each reference.

A large panel runs them on a fixed sample of its series (evaluate.panel_reference_sample), stated in every row. The
work is a list of small picklable jobs (one series' targets and origins each) mapped by `mapper(fn, chunks)`: the
builtin map here, a Prefect task's .map in the training flow (threads or a Dask cluster, as train.task_runner
says), `panel_validation.client_mapper(client)` on a Dask client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ..data.panel_windows import PanelWindowSet
from . import classical
from .evaluate import metrics, window_losses

Mapper = Callable[[Callable, list], Iterable]


@dataclass(frozen=True)
class SeriesJob:
    """One series' reference work: everything a worker needs, nothing of the panel."""

    series_id: str
    y: np.ndarray  # (rows, T) the series' targets in its own units (NaN rows: breaks)
    origins: np.ndarray  # row of each forecast's first target, in `y`
    horizon: int
    names: tuple[str, ...]
    seasons: tuple[int, ...]
    budget_s: float
    history: int | None
    refit_every: int | None
    mean: np.ndarray  # (T,) the panel's scaling of this series: its units = (y - mean) / scale
    scale: np.ndarray


@dataclass
class SeriesReferences:
    series_id: str
    refs: dict[str, classical.Reference]  # pred in the panel's per-series units


def sample_series(ids: list[str], n: int | None, seed: int) -> list[str]:
    """`n` of `ids` (all when n is None or larger), drawn once with `seed`, kept in panel order."""
    if n is None or len(ids) <= n:
        return list(ids)
    pick = np.sort(np.random.default_rng(seed).choice(len(ids), size=n, replace=False))
    return [ids[int(i)] for i in pick]


def jobs(ws: PanelWindowSet, starts: np.ndarray, settings) -> tuple[list[SeriesJob], int]:
    """The jobs for the windows at `starts` (the test origins a horizon apart) of the sampled series that hold
    them, and how many series held them before the sample."""
    ev = settings.evaluate
    seasons = ev.seasons if ev.seasons != "auto" else ws.meta.seasons
    seasons = tuple(sorted(int(m) for m in seasons if m > 1))
    starts = np.asarray(starts, dtype=np.int64)
    idx = ws.series_index(starts)
    present = [ws.series_ids[int(i)] for i in np.unique(idx)]
    keep = set(sample_series(present, ev.panel_reference_sample, settings.train.seed))
    tidx = ws.meta.target_idx
    out = []
    for i in np.unique(idx):
        sid = ws.series_ids[int(i)]
        if sid not in keep:
            continue
        o, n = int(ws.offsets[i]), int(ws.lengths[i])
        mean, scale = (a[tidx] for a in ws.scaler(sid))
        y = ws.values[o : o + n][:, tidx].astype(np.float64) * scale + mean
        out.append(
            SeriesJob(
                sid,
                y,
                starts[idx == i] - o + ws.meta.lookback,
                ws.meta.horizon,
                tuple(ev.references),
                seasons,
                ev.reference_budget_s,
                classical.history_rows(settings, list(seasons)),
                ev.reference_refit_every,
                mean,
                scale,
            )
        )
    return out, len(present)


def run_series(job: SeriesJob) -> SeriesReferences:
    """One series' references, their forecasts in the panel's per-series units."""
    refs = classical.reference_forecasts(
        job.y,
        job.origins,
        job.horizon,
        list(job.names),
        list(job.seasons),
        job.budget_s,
        job.history,
        job.refit_every,
    )
    for r in refs.values():
        if r.pred is not None:
            r.pred = (r.pred - job.mean) / job.scale
    return SeriesReferences(job.series_id, refs)


def run_chunk(chunk: list[SeriesJob]) -> list[SeriesReferences]:
    """A worker's share: its series one after another."""
    return [run_series(j) for j in chunk]


def chunks(items: list, n: int) -> list[list]:
    """`items` in at most `n` contiguous, near-equal parts (none empty)."""
    n = max(1, min(n, len(items)))
    bounds = np.linspace(0, len(items), n + 1).astype(int)
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def scores(ws: PanelWindowSet, starts: np.ndarray, results: list[SeriesReferences], total: int) -> dict[str, dict]:
    """Each reference's row: its status, the pooled metrics over every window of the series it forecast (the
    candidates' test metrics are pooled so too), the mean / median per-series MASE and each series' MASE."""
    starts = np.asarray(starts, dtype=np.int64)
    idx = ws.series_index(starts)
    pos = {sid: i for i, sid in enumerate(ws.series_ids)}
    names = list(results[0].refs) if results else []
    out = {}
    for name in names:
        ok_starts, preds, per_series, failed = [], [], {}, {}
        seconds, fits = 0.0, 0
        for res in results:
            r = res.refs[name]
            seconds, fits = seconds + r.seconds, fits + r.fits
            if not (r.ok and r.pred is not None):
                failed[res.series_id] = r.status
                continue
            i = pos[res.series_id]
            s = starts[np.searchsorted(idx, i, "left") : np.searchsorted(idx, i, "right")]  # by series, in order
            ok_starts.append(s)
            preds.append(r.pred)
            per_series[res.series_id] = float(window_losses(ws, s, r.pred).mean())
        row: dict = {
            "status": "ok" if not failed else _failures(failed, len(results)),
            "seconds": round(seconds, 2),
            "fits": fits,
            "windows": int(sum(len(s) for s in ok_starts)),
            "series": len(per_series),
            "series_sampled": len(results),
            "series_total": total,
            "failed": failed,
        }
        if per_series:
            s = np.concatenate(ok_starts)
            y = ws.targets(s)
            row.update(metrics(y, np.concatenate(preds), np.ones(len(ws.meta.targets)), ws.target_mask(s)))
            v = np.asarray(list(per_series.values()))
            row.update(mean_mase=float(v.mean()), median_mase=float(np.median(v)), per_series=per_series)
        out[name] = row
    return out


def _failures(failed: dict[str, str], n: int) -> str:
    sid, why = next(iter(failed.items()))
    return f"{len(failed)} of {n} series without a forecast (first: '{sid}': {why})"


def reference_rows(ws: PanelWindowSet, starts: np.ndarray, settings, mapper: Mapper | None = None, parts: int = 1):
    """The references of every sampled series at `starts`, fanned out in `parts` chunks by `mapper` (builtin map by
    default), and their rows (scores)."""
    work, total = jobs(ws, starts, settings)
    mapped = (mapper or (lambda fn, xs: map(fn, xs)))(run_chunk, chunks(work, parts))
    results = [r for chunk in mapped for r in chunk]
    return scores(ws, starts, results, total)


def compare_model(rows: dict[str, dict], ws: PanelWindowSet, starts: np.ndarray, losses: np.ndarray) -> None:
    """Beside each reference's row, the global model on the same windows (`losses`: its MASE of each window at
    `starts`): its mean / median per-series MASE and the share of the series where it beats the reference."""
    model = series_means(ws, starts, losses)
    for row in rows.values():
        per = row.get("per_series") or {}
        if not per:
            continue
        m = np.asarray([model[s] for s in per])
        r = np.asarray(list(per.values()))
        row["model_mean_mase"] = float(m.mean())
        row["model_median_mase"] = float(np.median(m))
        row["model_beats"] = int((m < r).sum())
        row["share_model_beats"] = float((m < r).mean())


def series_means(ws: PanelWindowSet, starts: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """The mean of `values` (one per window at `starts`) per series that holds any of them (one pass: a panel holds
    millions of windows)."""
    idx = ws.series_index(np.asarray(starts, dtype=np.int64))
    n = np.bincount(idx, minlength=len(ws.series_ids))
    total = np.bincount(idx, weights=np.asarray(values, np.float64), minlength=len(ws.series_ids))
    return {ws.series_ids[int(i)]: float(total[i] / n[i]) for i in np.flatnonzero(n)}


def describe(name: str, row: dict) -> str:
    """One reference on a panel in one line (the training summary)."""
    if "mase" not in row:
        return f"{name:6s} {row['status']}"
    sample = (
        f"{row['series']} series"
        if row["series_sampled"] == row["series_total"]
        else f"{row['series']} of a sample of {row['series_sampled']} series (of {row['series_total']})"
    )
    text = (
        f"{name:6s} MASE {row['mase']:.3f} pooled, per series mean {row['mean_mase']:.3f} median "
        f"{row['median_mase']:.3f} on {sample} ({row['seconds']:.0f}s, {row['fits']} fits)"
    )
    if "share_model_beats" in row:
        text += f"; the model beats it on {row['model_beats']} ({row['share_model_beats']:.0%})"
    if row["status"] != "ok":
        text += f"; {row['status']}"
    return text
