"""Quantile forecasts: the conformal shift that calibrates them, and the scores that judge them (numpy only).

Calibration (conformalised quantile regression, Romano et al. 2019, per level): on held-out windows, for each
horizon step, target and level tau, the shift s is the empirical tau-quantile of the misses y - q_tau, taken at
the finite-sample rank (ceil((n+1) tau) above the median, floor((n+1) tau) below it), so that y <= q_tau + s
holds for a share tau of exchangeable new windows. Windows at consecutive origins share targets: the rank counts the
independent paths among them (the windows a horizon apart), not the windows (evaluate.calibration_rank). The
median is not shifted: it is the point forecast.
Held-out months are not always exchangeable with the months that follow (docs/forecasting.md): by default
(evaluate.calibration: widen) a shift may widen an interval but never narrow it; `guarded` narrows only as far as
every consecutive part of the held-out windows agrees.

Relative to the level (evaluate.calibration_scale): on a strictly positive series whose misses grow with its level
(exponential growth, a multiplicative season) the misses are calibrated in units of each window's forecast level (the
mean absolute point forecast over its horizon, per target: `forecast_level`) and multiplied back by the level of the
window served (normalised conformal scores, Lei et al. 2018). `auto` takes it where the seasonal-naive bar's misses
over every window before the test split grow with their level (`misses_grow_with_level`: hundreds of windows); a
panel, where the held-out windows pool many series, where it scores the later half of the held-out windows better
from the earlier half (`relative_wins`). Chosen before the test split, never on test.

Walk-forward (online) calibration of the test split (`walk_forward`): each test origin's band is calibrated on
every miss observable before that origin, the held-out windows' and those of the earlier test windows whose whole
horizon ended before it, as a system that recalibrates as actuals arrive would have served it; no window sees a miss
from its own or a later horizon. The served model then carries the shift of every miss, held-out and test.
Adapted (`adapted_levels`): each origin's ranks read at levels corrected by how the nominal rule's bands covered the
test windows observed before it, so a rank too cautious (or too bold) for this series is corrected as evidence arrives.

Scores (y, quantiles (n, H, T, Q), in the data's units; `scale` per target, the MASE scale, so that pinball,
CRPS, width and Winkler read in MASE units and compare across datasets):
  pinball     mean over levels of the pinball (quantile) loss
  crps        2 x the mean pinball loss over the levels: the quantile-score approximation of the CRPS
              (exact in the limit of many evenly spaced levels)
  coverage_P  share of observed targets inside the central interval of nominal P% (levels tau and 1 - tau)
  width_P     its mean width
  winkler_P   width + (2 / alpha) x the distance by which the target falls outside (alpha = 1 - P/100)
Filled targets (mask False) are not scored.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

WALK_FORWARD_UPDATES = 200  # the most recalibrations over one test split (cost: each sorts every miss seen so far)


def intervals(levels: list[float]) -> list[tuple[int, int, float]]:
    """The central intervals the levels hold: (lower index, upper index, nominal coverage), widest last."""
    out = []
    for i, lo in enumerate(levels):
        if lo >= 0.5:
            continue
        for j, hi in enumerate(levels):
            if abs(hi - (1 - lo)) < 1e-9:
                out.append((i, j, round(hi - lo, 6)))
    return sorted(out, key=lambda t: t[2])


def interval_name(nominal: float) -> str:
    return f"{100 * nominal:g}"


def conformal_shift(
    y: np.ndarray,
    q: np.ndarray,
    levels: list[float],
    mask: np.ndarray | None = None,
    mode: str = "two_sided",
    parts: int = 2,
    paths: float | None = None,
    at: np.ndarray | None = None,
    per: np.ndarray | None = None,
) -> np.ndarray:
    """The per (step, target, level) shift (H, T, Q) that calibrates quantiles `q` (n, H, T, Q) on targets `y`;
    with `per` (n, 1, T) the misses in units of it, each window's own (the shift of `y / per` and `q / per[..., None]`,
    without a float64 copy of every level's quantiles).
    `paths`: how many independent forecast paths the n windows hold (those a horizon apart, when consecutive windows
    share targets); the finite-sample rank is taken among them, not among the n windows (None: n, no overlap).
    mode "widen": a level above the median only moves up, one below it only down (the interval never narrows).
    mode "guarded": the two-sided shift where it widens; where it narrows, only as far as each of `parts`
    consecutive parts of the windows (in time order) would narrow on its own: the least narrowing of them, so an
    interval narrows only when the whole held-out span agrees it is too wide, not when one calm stretch says so."""
    shift = rank_shift(y, q, levels, mask, paths, at, per)
    if mode == "widen":
        return outward(shift, levels).astype(np.float32)
    if mode == "guarded":
        bounds = np.linspace(0, len(y), max(int(parts), 2) + 1).round().astype(int)
        chunks = [
            rank_shift(
                y[a:b],
                q[a:b],
                levels,
                None if mask is None else mask[a:b],
                None if paths is None else paths * (b - a) / len(y),
                at,
                None if per is None else per[a:b],
            )
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
            if b > a
        ]
        for k, tau in enumerate(levels):
            if tau > 0.5:  # a negative shift narrows: keep the largest (least negative) the parts agree on, <= 0
                least = np.max([c[..., k] for c in chunks], axis=0)
                shift[..., k] = np.where(
                    shift[..., k] >= 0, shift[..., k], np.minimum(np.maximum(shift[..., k], least), 0)
                )
            elif tau < 0.5:
                least = np.min([c[..., k] for c in chunks], axis=0)
                shift[..., k] = np.where(
                    shift[..., k] <= 0, shift[..., k], np.maximum(np.minimum(shift[..., k], least), 0)
                )
    return shift.astype(np.float32)


def further_shift(
    held: np.ndarray,
    y: np.ndarray,
    q: np.ndarray,
    levels: list[float],
    mask: np.ndarray | None = None,
    mode: str = "widen",
    parts: int = 2,
    paths: float | None = None,
    at: np.ndarray | None = None,
) -> np.ndarray:
    """The shift (H, T, Q) to add to quantiles `q` that already carry the calibration `held` (H, T, Q), calibrated on
    targets `y` by `mode` (conformal_shift). Under "widen" the rule is read against the heads as trained, not against
    the calibrated band: the total (`held` plus the result) is the two-sided shift these misses ask on top of `held`,
    kept outward of the heads, so a band later misses find too wide comes back toward the heads, never past them
    (a fresh widen calibration on these misses, to within the heads' own reordering)."""
    if mode != "widen":
        return conformal_shift(y, q, levels, mask, mode, parts, paths, at)
    two = conformal_shift(y, q, levels, mask, "two_sided", parts, paths, at).astype(np.float64)
    return (outward(held + two, levels) - held).astype(np.float32)


def outward(shift: np.ndarray, levels: list[float]) -> np.ndarray:
    """Each level's shift clipped to widen only: up above the median, down below it."""
    out = shift.copy()
    for k, tau in enumerate(levels):
        out[..., k] = np.maximum(out[..., k], 0.0) if tau > 0.5 else np.minimum(out[..., k], 0.0)
    return out


def rank_shift(
    y: np.ndarray,
    q: np.ndarray,
    levels: list[float],
    mask: np.ndarray | None,
    paths: float | None = None,
    at: np.ndarray | None = None,
    per: np.ndarray | None = None,
) -> np.ndarray:
    """The two-sided conformal shift (H, T, Q), float64: the misses' tau-quantile at the finite-sample rank.

    With `paths` p < n (overlapping windows: 26 windows of 6 months hold about 5 independent paths), the rank is the
    one p exchangeable units need, r = ceil((p + 1) tau) of p above the median (floor below it), read as the share
    (r - 1/2) / p of the n sorted misses: the share moves outward as p shrinks (with 5 paths the 90% level reads the
    largest miss), where n windows would claim a precision their shared targets do not have. A rank beyond the paths
    reads past the largest miss (`_beyond`): a conformal quantile beyond the sample has no finite value, and the
    largest miss of p paths covers p / (p + 1) at best. `per` (n, 1, T): the misses in units of each window's own
    divisor (conformal_shift)."""
    y64 = y.astype(np.float64) if per is None else y / per
    shift = np.zeros(q.shape[1:], np.float64)
    for k, nominal in enumerate(levels):  # a level at a time: one level's misses in memory, sorted, not every level's
        if abs(nominal - 0.5) < 1e-12:
            continue
        tau = nominal if at is None else float(at[k])
        e = y64 - (q[..., k].astype(np.float64) if per is None else q[..., k] / per)
        if mask is not None:
            e = np.where(mask, e, np.nan)
        srt = np.sort(e, axis=0)  # NaN (unobserved) last
        n = np.isfinite(e).sum(axis=0)  # (H, T)
        del e
        rank = np.ceil((n + 1) * tau) if tau > 0.5 else np.floor((n + 1) * tau)
        if paths is not None and 0 < paths < len(y):
            p = max(float(paths), 1.0)  # the paths' rank, placed at the middle of its share of them (symmetric
            r = np.ceil((p + 1) * tau) if tau > 0.5 else np.floor((p + 1) * tau)  # for tau and 1 - tau), then
            share = (r - 0.5) / p  # read among the observed windows
            rank = np.ceil(share * n) if tau > 0.5 else np.floor(share * n)
        idx = np.clip(rank, 1, np.maximum(n, 1)).astype(np.int64) - 1
        pick = np.take_along_axis(srt, idx[None], axis=0)[0]
        if paths is not None and 0 < paths < len(y):
            pick = pick + _beyond(srt, n, float(paths), tau)
        shift[..., k] = np.where(n > 0, pick, 0.0)
    return shift


def _beyond(srt: np.ndarray, n: np.ndarray, p: float, tau: float) -> np.ndarray:
    """How far past the most extreme miss a level reads when its conformal rank lies beyond the `p` paths the `n`
    sorted misses hold ((p + 1) tau > p above the median, < 1 below it): the excess, in paths, times the spacing of
    one path at that end (the extreme miss less the miss one path in). Reading the extreme miss itself would cover
    p / (p + 1) at best (83% with 5 paths) and give the 80% and 90% intervals the same band."""
    excess = (p + 1) * tau - p if tau > 0.5 else 1 - (p + 1) * tau
    if excess <= 0 or p < 2:
        return np.zeros(srt.shape[1:])
    one = np.maximum(n / p, 1.0)  # windows per path

    def at(rank: np.ndarray) -> np.ndarray:
        i = np.clip(np.ceil(rank), 1, np.maximum(n, 1)).astype(np.int64) - 1
        return np.take_along_axis(srt, i[None], axis=0)[0]

    gap = at(n) - at(n - one) if tau > 0.5 else at(np.ones_like(n)) - at(1 + one)
    return np.where(n > 1, excess * np.nan_to_num(gap), 0.0)


def forecast_level(point: np.ndarray) -> np.ndarray:
    """Each window's level (n, 1, T, 1): the mean absolute point forecast (n, H, T) over its horizon, what the
    model's graph multiplies `q_scale` by."""
    return np.abs(point.astype(np.float64)).mean(axis=1, keepdims=True)[..., None]


def mean_interval_score(y: np.ndarray, q: np.ndarray, levels: list[float], mask: np.ndarray | None) -> float:
    """The Winkler score averaged over the central intervals the levels hold, in the data's units."""
    scores, _ = quantile_scores(y, q, levels, np.ones(y.shape[-1]), mask)
    return float(np.mean([scores[f"winkler_{interval_name(p)}"] for _, _, p in intervals(levels)]))


def relative_wins(
    y: np.ndarray,
    q: np.ndarray,
    point: np.ndarray,
    levels: list[float],
    mask: np.ndarray | None,
    shift: Callable[..., np.ndarray],
) -> bool:
    """Whether calibrating in units of the forecast level scores the later half of the held-out windows (time order)
    better than the plain shift, both fitted on the earlier half with `shift(y, q, mask, part) -> (H, T, Q)` (part:
    the share of the windows fitted on): a strictly positive series only, with intervals to score."""
    half = len(y) // 2
    if half < 2 or not intervals(levels) or not (np.nan_to_num(y, nan=1.0) > 0).all():
        return False
    lv = forecast_level(point)
    if not (lv > 0).all():
        return False
    a, b = slice(0, half), slice(half, len(y))
    ma, mb = (None, None) if mask is None else (mask[a], mask[b])
    plain = ordered(q[b] + shift(y[a], q[a], ma, half / len(y)), levels)
    rel = shift(y[a] / lv[a][..., 0], q[a] / lv[a], ma, half / len(y))
    return mean_interval_score(y[b], ordered(q[b] + rel * lv[b], levels), levels, mb) < mean_interval_score(
        y[b], plain, levels, mb
    )


def misses_grow_with_level(
    y: np.ndarray,
    pred: np.ndarray,
    origins: np.ndarray,
    season: int,
    mask: np.ndarray | None = None,
    paths: float | None = None,
) -> dict:
    """Whether a forecast's misses grow with its level: windows of targets `y` and a forecast `pred` (n, H, T) at
    `origins` (n,), the seasonal-naive bar's over the rows before the test split. Each miss is taken less the mean miss
    at its step fitted by a local quadratic through the windows whole `season`s apart, two either side (what the
    forecast systematically misses by at that point of the season, a drift it lags, changes smoothly from one season
    to the next, exponential growth included: no spread), then
    its size ranked against the window's level (`forecast_level`) in the data's units and in the level's: level units
    where the size in the data's units grows with the level significantly (Spearman's rho above 2 / sqrt(paths): the
    independent paths the windows hold, n without overlap) and rho in the level's units is nearer zero (dividing by
    the level removes more of the relation than it makes). Strictly positive targets only.
    Returns {"level": the decision, and where it was measured: "rho_absolute", "rho_level", "threshold"}."""
    n, _, T = y.shape
    no = {"level": False}
    if n < 3 or not (np.nan_to_num(y, nan=1.0) > 0).all():
        return no
    lv = forecast_level(pred)[..., 0]  # (n, 1, T)
    if not (np.nan_to_num(lv, nan=1.0) > 0).all():
        return no
    e = (y - pred).astype(np.float64)
    if mask is not None:
        e = np.where(mask, e, np.nan)
    origins = np.asarray(origins)
    centre = np.zeros_like(e)
    for j, w in zip(range(-2, 3), _QUADRATIC_5, strict=True):  # the windows whole seasons apart; NaN where one is not
        at = np.searchsorted(origins, origins + j * season).clip(0, n - 1)
        found = (origins[at] == origins + j * season)[:, None, None]
        centre += np.where(found, e[at], np.nan) * w
    size = np.abs(e - centre)
    level = np.broadcast_to(lv, size.shape)
    rho_abs, rho_rel = [], []
    for t in range(T):
        ok = np.isfinite(size[..., t]) & np.isfinite(level[..., t])
        s, lvl = size[..., t][ok], level[..., t][ok]
        if len(s) < 3:
            return no
        rho_abs.append(_spearman(s, lvl))
        rho_rel.append(_spearman(s / lvl, lvl))
    grows, rel = float(np.mean(rho_abs)), float(np.mean(np.abs(rho_rel)))
    seen = int(np.isfinite(size).all(axis=(1, 2)).sum())  # the windows measured, of n
    threshold = 2 / math.sqrt(max((paths if paths is not None else n) * seen / n, 2.0))
    return {
        "level": bool(grows > threshold and rel < grows),
        "rho_absolute": round(grows, 4),
        "rho_level": round(float(np.mean(rho_rel)), 4),
        "threshold": round(threshold, 4),
    }


_QUADRATIC_5 = np.array([-3.0, 12.0, 17.0, 12.0, -3.0]) / 35  # a quadratic through 5 points, read at the middle


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 where either is constant."""
    ra, rb = _ranks(a), _ranks(b)
    sa, sb = ra.std(), rb.std()
    if sa == 0 or sb == 0:
        return 0.0
    return float(((ra - ra.mean()) * (rb - rb.mean())).mean() / (sa * sb))


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    srt = x[order]
    first = np.r_[True, srt[1:] != srt[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends - 1) / 2.0
    out = np.empty(len(x))
    out[order] = avg[group]
    return out


def walk_forward(
    ends: np.ndarray,
    origins: np.ndarray,
    shift_of: Callable[..., np.ndarray],
    every: int = 1,
    updates: int = WALK_FORWARD_UPDATES,
    adapt: Callable[[np.ndarray, np.ndarray], np.ndarray | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per test window, the shift calibrated on the misses observable at its origin; and the shift of every miss.

    `ends`: when each pooled window's last target is observed (held-out windows first, then the n test windows), in
    any ordered unit (row positions, timestamps); `origins` (n): each test window's first target. `shift_of(idx)`:
    the shift (H, T, Q) calibrated on the pooled windows at `idx` (sorted). The shift is recomputed at every
    `every`-th distinct origin (at most `updates` times, evenly); a window uses the last recomputation at or before
    its origin, on the windows whose last target lies before that point.
    `adapt(seen, shifts)`: given the test windows observed by then (positions among the n) and the shifts their
    nominal rule gave them (k, H, T, Q), the levels (Q,) to read the ranks at instead (None: nominal), passed as
    `shift_of(idx, at)`; the nominal rule's shifts are kept beside, so a correction learns from how the nominal rule
    covered, never from its own earlier corrections. Returns ((n, H, T, Q), (H, T, Q))."""
    n = len(origins)
    nominal_final = shift_of(np.arange(len(ends)))
    out = np.zeros((n, *nominal_final.shape), nominal_final.dtype)
    if not n:
        return out, nominal_final
    fit = len(ends) - n
    u = np.unique(origins)
    step = max(int(every), -(-len(u) // max(int(updates), 1)), 1)
    bounds = u[::step]
    which = np.searchsorted(bounds, origins, side="right") - 1  # >= 0: bounds[0] is the first origin
    nominal = np.zeros_like(out)
    done: dict[int, np.ndarray] = {}
    adapted: dict[int, np.ndarray] = {}
    for b in np.unique(which):
        idx = np.flatnonzero(ends < bounds[b])
        key = len(idx)  # the observed set only grows with the bound: its size names it
        if key not in done:
            done[key] = shift_of(idx)
        nominal[which == b] = done[key]
        if adapt is not None and key not in adapted:
            seen = idx[idx >= fit] - fit  # test windows observed by now: each origin is before this bound
            at = adapt(seen, nominal[seen]) if len(seen) else None
            adapted[key] = done[key] if at is None else shift_of(idx, at)
        out[which == b] = done[key] if adapt is None else adapted[key]
    if adapt is None:
        return out, nominal_final
    at = adapt(np.arange(n), nominal)
    return out, (nominal_final if at is None else shift_of(np.arange(len(ends)), at))


def adapted_levels(
    y: np.ndarray, band: np.ndarray, levels: list[float], mask: np.ndarray | None, weight: float
) -> np.ndarray:
    """The levels (Q,) at which to read the conformal ranks so that the band covers what it says: each level tau
    moved against the share of targets `y` (k, H, T) its nominal band `band` (k, H, T, Q) put at or below it, by
    `weight` (0..1) of the gap: tau - weight x (share - tau). A band that covered more than nominal (the upper level
    above more than tau of the targets, the lower one above fewer than 1 - tau) is read nearer the median (narrower);
    one that covered less, further out. Kept on its side of the median, at most halfway to it or to 0 / 1 (the guard:
    a correction never inverts or doubles a band on one stretch's evidence). The median stays 0.5."""
    below = y.astype(np.float64)[..., None] <= band
    m = np.ones(y.shape, bool) if mask is None else mask
    share = (below & m[..., None]).sum(axis=(0, 1, 2)) / max(int(m.sum()), 1)
    tau = np.asarray(levels, np.float64)
    at = tau - float(np.clip(weight, 0.0, 1.0)) * (share - tau)
    lo = np.where(tau > 0.5, (tau + 0.5) / 2, tau / 2)
    hi = np.where(tau > 0.5, (tau + 1) / 2, (tau + 0.5) / 2)
    return np.where(np.abs(tau - 0.5) < 1e-12, tau, np.clip(at, lo, hi))


def ordered(q: np.ndarray, levels: list[float]) -> np.ndarray:
    """Quantiles (..., Q) made non-decreasing outward from the median, as the model's graph does after its shift."""
    out = np.array(q, copy=True)
    m = min(range(len(levels)), key=lambda k: abs(levels[k] - 0.5))
    for k in range(m + 1, len(levels)):
        out[..., k] = np.maximum(out[..., k], out[..., k - 1])
    for k in range(m - 1, -1, -1):
        out[..., k] = np.minimum(out[..., k], out[..., k + 1])
    return out


def _mean(a: np.ndarray, mask: np.ndarray | None, axis=None):
    if mask is None:
        return a.mean(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mask, a, 0.0).sum(axis=axis) / mask.sum(axis=axis)


def pinball(y: np.ndarray, q: np.ndarray, levels: list[float], scale: np.ndarray) -> np.ndarray:
    """The pinball loss of every level, scaled: (n, H, T, Q)."""
    e = (y.astype(np.float64)[..., None] - q.astype(np.float64)) / np.asarray(scale)[None, None, :, None]
    tau = np.asarray(levels, np.float64)
    return np.maximum(tau * e, (tau - 1) * e)


def quantile_scores(
    y: np.ndarray, q: np.ndarray, levels: list[float], scale: np.ndarray, mask: np.ndarray | None = None
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(scores, scores per horizon step) of quantile forecasts (module docstring). Empty without levels."""
    if q is None or not levels:
        return {}, {}
    y64 = y.astype(np.float64)
    sc = np.asarray(scale, np.float64)[None, None, :]
    loss = pinball(y, q, levels, scale).mean(axis=-1)  # (n, H, T): mean over levels
    out = {"pinball": float(_mean(loss, mask)), "crps": float(2 * _mean(loss, mask))}
    steps = {"crps": (2 * _mean(loss, mask, axis=(0, 2))).tolist()}
    for lo, hi, nominal in intervals(levels):
        name = interval_name(nominal)
        low, up = q[..., lo].astype(np.float64), q[..., hi].astype(np.float64)
        inside = ((y64 >= low) & (y64 <= up)).astype(np.float64)
        width = (up - low) / sc
        winkler = _winkler(y64, low, up, nominal, sc)
        out.update(
            {
                f"coverage_{name}": float(_mean(inside, mask)),
                f"nominal_{name}": nominal,
                f"width_{name}": float(_mean(width, mask)),
                f"winkler_{name}": float(_mean(winkler, mask)),
            }
        )
        steps[f"coverage_{name}"] = _mean(inside, mask, axis=(0, 2)).tolist()
        steps[f"width_{name}"] = _mean(width, mask, axis=(0, 2)).tolist()
    return out, steps


def _winkler(y64: np.ndarray, low: np.ndarray, up: np.ndarray, nominal: float, sc: np.ndarray) -> np.ndarray:
    """The Winkler score of each target (n, H, T), scaled by `sc`: the interval's width plus 2 / alpha times the
    distance by which the target falls outside it (alpha = 1 - nominal)."""
    return (up - low) / sc + (2 / (1 - nominal)) * (np.maximum(low - y64, 0) + np.maximum(y64 - up, 0)) / sc


def window_winkler(
    y: np.ndarray, q: np.ndarray, levels: list[float], scale: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Each window's Winkler score (n,) of every central interval, averaged over its observed steps and targets, in
    MASE units (`scale` per target): the per-window losses the interval-score gate tests (registry/promotion.py)."""
    out: dict[str, np.ndarray] = {}
    if q is None or not levels:
        return out
    y64 = y.astype(np.float64)
    sc = np.asarray(scale, np.float64)[None, None, :]
    for lo, hi, nominal in intervals(levels):
        w = _winkler(y64, q[..., lo].astype(np.float64), q[..., hi].astype(np.float64), nominal, sc)
        if mask is None:
            out[interval_name(nominal)] = w.mean(axis=(1, 2))
        else:
            out[interval_name(nominal)] = np.where(mask, w, 0.0).sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1)
    return out


def crossings(q: np.ndarray) -> int:
    """How many (window, step, target) forecasts have a level below the one before it."""
    return int((np.diff(q, axis=-1) < 0).any(axis=-1).sum())
