"""The anchor a forecaster learns its residual over, chosen once per window set (train.anchor).

seasonal_naive: the best seasonal naive on validation (registry/assessment.baselines picks its season).
linear: a ridge regression from the target's lookback (on a panel, the last `span` steps of it, chosen on
validation: `linear_spans`), relative to its last value (NLinear), and the known-future block of the horizon (scaled
as the model scales them) to the horizon, relative to that same last value. It is fitted in closed form: the normal
equations are accumulated over the training windows in float64, chunk by chunk (memory does not grow with the
windows), solved for each penalty in `train.anchor_ridge` (lambda * n * 1e-3 added to the diagonal of the centred
Gram matrix), and the penalty with the lowest validation MAE kept. Windows with a filled target are left out of the
fit. The fit is deterministic (no seed), and frozen inside every candidate (docs/research.md: training it further
did not help).
seasonal_median: the median of several seasonal naives, step by step: the last few of the longest natural season
the lookback holds (a week, two weeks ago) with or without the shorter seasons (yesterday). Where the series repeat a
timetable, its copies differ by one-off noise (a day of delays, an event): the seasonal naive copies last week's noise
and the residual network cannot tell it from signal; the median of three copies outvotes one odd copy. The seasons are
chosen on validation among those sets (`median_sets`), like the ridge penalty.
combined: the mean of the linear anchor and the seasonal naive (forecast combination): still a linear map of the
lookback, the linear anchor's weights halved plus half the weights that pick the last season, so the model and its
ONNX graph are a linear anchor's. Where the ridge and the seasonal naive miss in different ways (a level shift the
seasonal naive carries for a year, a season the ridge smooths), the mean misses less than either.
theta: the Theta method's forecast of the lookback alone, a fixed linear map of it (no fitting but its smoothing
constant, chosen on validation among `train.anchor_theta_alphas`): the lookback's line (least squares) taken out, the
mean of what is left at each phase of the season is its seasonal index (centred), the lookback less its indices is
smoothed by simple exponential smoothing (started at its first value) and continued with half the slope of its line
(Hyndman & Billah's form of Theta: level + b/2 * (h - 1 + 1/alpha - (1 - alpha)^L / alpha)), and the indices are put
back. Every step is linear and shifts with the lookback, so it is held as a linear anchor (its weights on the lookback
relative to the last value, none on the known-future block) and exports as one. The ridge fits a free map on the
short series' few windows (90 on 16 years of months); the Theta forecast has no free weights to overfit and carries a
trend the seasonal naive does not. combined_theta: the mean of the linear anchor and the theta anchor, held the same
way.
auto: whichever of them has the lowest validation MASE (e.g. sp500 keeps its naive anchor). The seasonal median is
weighed on a panel whose lookback holds two of its longest season (window.lookback_seasons); the combination for a
single series whose seasonal naive has a season (> 1: with the naive forecast the mean is the ridge halfway to its
own prior, which the penalty already covers), and the theta anchor and its mean with the linear one likewise; a tie
keeps the earlier of seasonal naive, linear, combined, theta, combined_theta. A single series gets the seasonal median
only when train.anchor asks. Where window.min_lookback_seasons lengthened a short series' lookback (data/splits.py),
auto weighs them twice: on the whole lookback, and as the lookback before would have chosen them (the window set cut
again at it, its linear anchor then held over the whole lookback with no weight on the earlier steps); the lower
validation MASE is kept, a tie the shorter: validation chooses how much history the anchor reads.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..config import Settings
from ..data.seasonal import median_sets as _median_sets
from ..data.seasonal import naive_offsets
from ..data.seasonal import seasonal_median as _median_of
from ..data.splits import resolve_window
from ..data.window import with_lookback
from ..data.windowset import WindowSet
from ..errors import ConfigError
from .evaluate import mase_scale, metrics, seasonal_naive, split_mase

CHUNK = 2048


@dataclass
class LinearAnchor:
    weight: np.ndarray  # (H*T, L*T + H*F) float32: what nn.Linear holds
    bias: np.ndarray  # (H*T,)
    ridge: float  # the penalty chosen on validation
    val_mae_scaled: float  # its validation MAE in scaled units
    windows: int  # training windows fitted on
    seconds: float
    by_ridge: dict[str, float] = field(default_factory=dict)  # validation MAE (scaled) of every penalty tried
    span: int = 0  # the last steps of the lookback it reads (its weights on earlier steps are zero)
    by_span: dict[str, float] = field(default_factory=dict)  # the best validation MAE (scaled) of each span tried
    alpha: float | None = None  # a theta anchor's smoothing constant (chosen on validation); None: a ridge
    by_alpha: dict[str, float] = field(default_factory=dict)  # validation MASE of every smoothing constant tried

    def fingerprint(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.weight).tobytes())
        h.update(np.ascontiguousarray(self.bias).tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        return {
            "ridge": self.ridge,
            "val_mae_scaled": self.val_mae_scaled,
            "windows": self.windows,
            "seconds": round(self.seconds, 3),
            "by_ridge": self.by_ridge,
            "span": self.span,
            "by_span": self.by_span,
            "alpha": self.alpha,
            "by_alpha": self.by_alpha,
        }


@dataclass
class AnchorChoice:
    """What every candidate of one training run is anchored on."""

    kind: str  # seasonal_naive | seasonal_median | linear | combined | theta | combined_theta (the last three held as
    # a linear anchor) | none
    season: int | None  # the seasonal naive's season; also the seasonal differences the cell reads
    linear: LinearAnchor | None = None
    val_mase: dict[str, float] = field(default_factory=dict)  # each anchor considered, on validation
    reason: str = ""
    seasons: list[int] = field(default_factory=list)  # seasonal_median: the seasonal naives it is the median of

    def fingerprint(self) -> str:
        extra = f":{','.join(map(str, self.seasons))}" if self.seasons else ""
        return f"{self.kind}:{self.season}:{self.linear.fingerprint() if self.linear else ''}{extra}"

    def summary(self) -> dict:
        return {
            "kind": self.kind,
            "season": self.season,
            "seasons": self.seasons,
            "val_mase": self.val_mase,
            "reason": self.reason,
            "linear": self.linear.summary() if self.linear else None,
        }


def _design(ws: WindowSet, starts: np.ndarray, fmean: np.ndarray, fstd: np.ndarray):
    """Ridge inputs X (n, L*T + H*F), outputs Y (n, H*T) relative to each window's last value, and the last
    values (n, T), in the model's scaled units (float64)."""
    m = ws.meta
    tidx = m.target_idx
    mu = np.asarray(m.mean, np.float64)[tidx]
    sd = np.asarray(m.std, np.float64)[tidx]
    x, y = ws.batch(starts)
    zt = (x[:, :, tidx].astype(np.float64) - mu) / sd
    last = zt[:, -1, :]
    parts = [(zt - last[:, None, :]).reshape(len(starts), -1)]
    f = ws.future_batch(starts)
    if f is not None:
        parts.append(((f.astype(np.float64) - fmean) / fstd).reshape(len(starts), -1))
    Y = ((y.astype(np.float64) - mu) / sd - last[:, None, :]).reshape(len(starts), -1)
    return np.concatenate(parts, axis=1), Y, last


def fit_linear_anchor(ws: WindowSet, settings: Settings) -> LinearAnchor:
    """The ridge anchor of `ws` (module docstring)."""
    t0 = time.perf_counter()
    t = settings.train
    fm, fs = ws.future_scaler()
    fmean, fstd = np.asarray(fm, np.float64), np.asarray(fs, np.float64)
    train = ws.starts["train"]
    mask = ws.target_mask(train)
    if mask is not None:  # a filled target is no observation to fit
        train = train[mask.all(axis=(1, 2))]
    if len(train) > t.anchor_max_windows:
        rng = np.random.default_rng(t.seed)
        train = np.sort(rng.choice(train, t.anchor_max_windows, replace=False))
    n = len(train)
    if n < 2:
        raise ValueError(f"{ws.meta.name}: {n} complete training windows: too few to fit a linear anchor")
    xtx = xty = sx = sy = None
    for i in range(0, n, CHUNK):
        X, Y, _ = _design(ws, train[i : i + CHUNK], fmean, fstd)
        if xtx is None:
            xtx, xty = np.zeros((X.shape[1],) * 2), np.zeros((X.shape[1], Y.shape[1]))
            sx, sy = np.zeros(X.shape[1]), np.zeros(Y.shape[1])
        xtx += X.T @ X
        xty += X.T @ Y
        sx += X.sum(0)
        sy += Y.sum(0)
    assert xtx is not None and xty is not None and sx is not None and sy is not None  # n >= 2: the loop ran
    mx, my = sx / n, sy / n
    gram = xtx - n * np.outer(mx, mx)
    cross = xty - n * np.outer(mx, my)
    spans = linear_spans(ws, settings)
    T = len(ws.meta.target_idx)
    L = ws.meta.lookback
    solutions = {}
    for span in spans:  # the last `span` steps of the target and the whole future block: a block of the Gram matrix
        cols = np.r_[(L - span) * T : len(gram)]
        sub = np.ix_(cols, cols)
        for lam in t.anchor_ridge:
            w = np.zeros_like(cross)
            w[cols] = np.linalg.solve(gram[sub] + lam * n * 1e-3 * np.eye(len(cols)), cross[cols])
            solutions[(span, lam)] = (w, my - mx @ w)
    val = ws.starts["val"]
    err = {key: 0.0 for key in solutions}
    count = 0.0
    for i in range(0, len(val), CHUNK):
        s = val[i : i + CHUNK]
        X, Y, _ = _design(ws, s, fmean, fstd)
        vm = ws.target_mask(s)
        w_obs = np.ones_like(Y) if vm is None else vm.reshape(len(s), -1).astype(np.float64)
        count += w_obs.sum()
        for key, (w, b) in solutions.items():
            err[key] += float((np.abs(X @ w + b - Y) * w_obs).sum())
    by = {key: e / max(count, 1.0) for key, e in err.items()}
    best = min(by, key=lambda k: (by[k], -k[0], k[1]))  # on a tie: the longer span, the smaller penalty
    w, b = solutions[best]
    return LinearAnchor(
        weight=w.T.astype(np.float32),
        bias=b.astype(np.float32),
        ridge=float(best[1]),
        val_mae_scaled=float(by[best]),
        windows=n,
        seconds=time.perf_counter() - t0,
        by_ridge={f"{lam:g}": float(v) for (span, lam), v in by.items() if span == best[0]},
        span=int(best[0]),
        by_span={str(sp): float(min(v for (s2, _), v in by.items() if s2 == sp)) for sp in spans},
    )


def linear_spans(ws: WindowSet, settings: Settings) -> list[int]:
    """The lookback steps the linear anchor may read, chosen on validation: the whole lookback, and on a panel (whose
    lookback holds two seasons: window.lookback_seasons) also each natural season + train.rnn_steps shorter than it
    (what a one-season lookback would be: a ridge over more columns than its windows support fits worse)."""
    L = ws.meta.lookback
    if not ws.is_panel:
        return [L]
    k = settings.train.rnn_steps
    return sorted({L} | {int(m) + k for m in ws.meta.seasons if 1 < int(m) + k < L})


def linear_forecast(ws: WindowSet, starts: np.ndarray, anchor: LinearAnchor) -> np.ndarray:
    """The linear anchor's forecast (n, H, T) in the data's units, as the model computes it."""
    m = ws.meta
    tidx = m.target_idx
    mu = np.asarray(m.mean, np.float64)[tidx]
    sd = np.asarray(m.std, np.float64)[tidx]
    fm, fs = ws.future_scaler()
    out = []
    for i in range(0, len(starts), CHUNK):
        X, _, last = _design(ws, starts[i : i + CHUNK], np.asarray(fm), np.asarray(fs))
        z = (X @ anchor.weight.T.astype(np.float64) + anchor.bias).reshape(len(X), m.horizon, len(tidx))
        out.append((z + last[:, None, :]) * sd + mu)
    return np.concatenate(out) if out else np.zeros((0, m.horizon, len(tidx)))


def median_sets(ws: WindowSet) -> list[list[int]]:
    """The season sets the seasonal-median anchor of `ws` may take (data/seasonal.py `median_sets`)."""
    return _median_sets(ws.meta.lookback, list(ws.meta.seasons))


def seasonal_median(ws: WindowSet, starts: np.ndarray, seasons: list[int]) -> np.ndarray:
    """The seasonal-median forecast (n, H, T) of the windows at `starts`: the median of the seasonal naives over
    `seasons` step by step (an even count: the mean of the middle two), as the model computes it."""
    return _median_of([seasonal_naive(ws, starts, m) for m in seasons])


def _best_median(ws: WindowSet) -> tuple[list[int], dict[str, float]] | None:
    """The season set whose seasonal median forecasts validation best, and every set's validation MASE."""
    val = ws.starts["val"]
    scores = {}
    for seasons in median_sets(ws):

        def forecast(starts: np.ndarray, m: list[int] = seasons) -> np.ndarray:
            return seasonal_median(ws, starts, m)

        scores[",".join(map(str, seasons))] = split_mase(ws, val, forecast)
    if not scores:
        return None
    best = min(scores, key=lambda k: (scores[k], k))
    return [int(m) for m in best.split(",")], scores


def _median_choice(seasons: list[int], season: int | None, scores: dict[str, float], why: str) -> AnchorChoice:
    """The seasonal-median anchor over `seasons` (its season for the model: the best seasonal naive's, else the longest
    of them)."""
    return AnchorChoice("seasonal_median", season or seasons[-1], None, scores, why, seasons)


def _lookback_map(ws: WindowSet, rows: np.ndarray) -> np.ndarray:
    """A linear anchor's weight (H*T, L*T + H*F) that forecasts every target by `rows` (H, L) times its own lookback
    and reads no known-future input. Its rows sum to one, so the map of the lookback relative to its last value (the
    design's) plus that last value is the map of the lookback itself."""
    L, H, T = ws.meta.lookback, ws.meta.horizon, len(ws.meta.target_idx)
    F = ws.meta.n_future
    assert rows.shape == (H, L) and np.allclose(rows.sum(1), 1.0), "a lookback map must keep a constant series"
    weight = np.zeros((H * T, L * T + H * F))
    for t in range(T):
        weight[t : H * T : T, t : L * T : T] = rows
    return weight


def mean_with_linear(lin: LinearAnchor, weight: np.ndarray) -> LinearAnchor:
    """The mean of `lin` and a fixed lookback map (_lookback_map), as one linear anchor."""
    return replace(lin, weight=(0.5 * lin.weight + 0.5 * weight).astype(np.float32), bias=0.5 * lin.bias)


def combine_with_seasonal_naive(ws: WindowSet, lin: LinearAnchor, season: int) -> LinearAnchor:
    """The mean of `lin` and the seasonal naive of `season`, as one linear anchor (module docstring): in the
    design's terms the seasonal naive is the lookback value `season` steps before each horizon step, relative to
    the last value (the model's anchor_season)."""
    L, H = ws.meta.lookback, ws.meta.horizon
    pick = np.zeros((H, L))
    pick[np.arange(H), L + naive_offsets(H, season)] = 1.0
    return mean_with_linear(lin, _lookback_map(ws, pick))


def theta_weights(lookback: int, horizon: int, season: int, alpha: float) -> np.ndarray:
    """(horizon, lookback) float64: the theta anchor's forecast as a linear map of one lookback (module docstring);
    the phase of step i is i mod `season` counted from the lookback's first step (1: no season)."""
    L, H = lookback, horizon
    t = np.arange(L, dtype=np.float64)
    line = np.linalg.pinv(np.stack([np.ones(L), t], 1))  # (2, L): intercept and slope of the least-squares line
    detrended = np.eye(L) - np.stack([np.ones(L), t], 1) @ line
    phase = np.arange(L + H) % season
    onehot = (phase[:L, None] == np.arange(season)[None, :]).astype(np.float64)  # (L, m)
    index = (onehot / onehot.sum(0)).T @ detrended  # (m, L): the mean detrended value at each phase
    index -= index.mean(0)  # centred: the indices sum to zero over a season
    adjusted = np.eye(L) - index[phase[:L]]  # the lookback less its seasonal indices
    smooth = alpha * (1 - alpha) ** (L - 1 - t)
    smooth[0] += (1 - alpha) ** L  # exponential smoothing started at the first value: weights sum to one
    level, slope = smooth @ adjusted, line[1] @ adjusted
    h = np.arange(1, H + 1, dtype=np.float64)
    drift = 0.5 * (h - 1 + 1 / alpha - (1 - alpha) ** L / alpha)
    return level[None, :] + drift[:, None] * slope[None, :] + index[phase[L:]]


def fit_theta_anchor(ws: WindowSet, settings: Settings, season: int) -> LinearAnchor:
    """The theta anchor of `ws` over `season` (module docstring), its smoothing constant the one of
    `train.anchor_theta_alphas` whose forecast has the lowest validation MASE (a tie: the smaller)."""
    t0 = time.perf_counter()
    val = ws.starts["val"]
    y, mask, scale = ws.targets(val), ws.target_mask(val), mase_scale(ws)
    L, H, T = ws.meta.lookback, ws.meta.horizon, len(ws.meta.target_idx)
    sd = np.asarray(ws.meta.std, np.float64)[ws.meta.target_idx]
    observed = np.ones(y.shape) if mask is None else mask.astype(np.float64)
    fitted, by, mae = {}, {}, {}
    for alpha in sorted(set(settings.train.anchor_theta_alphas)):
        weight = _lookback_map(ws, theta_weights(L, H, season, alpha)).astype(np.float32)
        fitted[alpha] = LinearAnchor(weight, np.zeros(H * T, np.float32), 0.0, 0.0, 0, 0.0, span=L, alpha=alpha)
        pred = linear_forecast(ws, val, fitted[alpha])
        by[alpha] = metrics(y, pred, scale, mask)["mase"]
        mae[alpha] = float((np.abs(pred - y) / sd * observed).sum() / max(observed.sum(), 1.0))
    alpha = min(by, key=lambda a: (by[a], a))
    return replace(
        fitted[alpha],
        val_mae_scaled=mae[alpha],
        by_alpha={f"{a:g}": float(v) for a, v in by.items()},
        seconds=time.perf_counter() - t0,
    )


def short_span(ws: WindowSet, settings: Settings) -> int | None:
    """The auto lookback a single series would have without `window.min_lookback_seasons`, where that setting gave it
    a longer one (else None): auto weighs its anchors reading only those last steps too."""
    w = settings.window
    if ws.is_panel or w.lookback != "auto" or w.min_lookback_seasons == 1:
        return None
    m = ws.meta
    one = settings.model_copy(update={"window": w.model_copy(update={"min_lookback_seasons": 1})})
    short, long = (resolve_window(s, m.freq, m.rows, m.schedule)[0] for s in (one, settings))
    return short if short < long == m.lookback else None  # else the lookback is not the one the setting lengthened


def choose_anchor(ws: WindowSet, settings: Settings, season: int | None) -> AnchorChoice:
    """The anchor of one training run: train.anchor, with `season` the best seasonal naive's (assessment.baselines).
    auto fits the linear anchor and keeps whichever of the linear, the seasonal naive and (a single series with a
    season > 1) their mean, the theta anchor and its mean with the linear one forecasts validation better (MASE).
    Where `window.min_lookback_seasons` lengthened the lookback (`short_span`), auto weighs them twice, reading the
    whole lookback and only its last `short_span` steps, and keeps the better (a tie: the shorter)."""
    short = short_span(ws, settings) if settings.train.anchor == "auto" and settings.train.residual else None
    if short is None or (season or 0) > short:
        return _choose(ws, settings, season)
    whole = _choose(ws, settings, season)
    part = _choose(with_lookback(ws, short, settings), settings, season)  # the choice of the lookback before
    if part.linear is not None:  # held over the long lookback: no weight on its first steps
        lin = _widened(part.linear, short, ws)
        part = replace(part, linear=lin)
        val = ws.starts["val"]
        score = metrics(ws.targets(val), linear_forecast(ws, val, lin), mase_scale(ws), ws.target_mask(val))
        part.val_mase[part.kind] = score["mase"]  # on the long lookback's validation windows, like `whole`
    L = ws.meta.lookback
    scores = {f"{k} (last {short})": v for k, v in part.val_mase.items()} | whole.val_mase
    keep = part if part.val_mase[part.kind] <= whole.val_mase[whole.kind] else whole
    span = short if keep is part else L
    why = f"{keep.reason}, reading the last {span} of the {L} lookback steps ({L} since window.min_lookback_seasons)"
    return replace(keep, val_mase=scores, reason=why)


def _widened(lin: LinearAnchor, short: int, ws: WindowSet) -> LinearAnchor:
    """A linear anchor fitted on a lookback of `short` steps, as one over the lookback of `ws`: its weights on the
    last `short` steps, none on the earlier ones, the known-future block's as they were."""
    L, T = ws.meta.lookback, len(ws.meta.target_idx)
    weight = np.zeros((lin.weight.shape[0], lin.weight.shape[1] + (L - short) * T), np.float32)
    weight[:, (L - short) * T : L * T] = lin.weight[:, : short * T]
    weight[:, L * T :] = lin.weight[:, short * T :]
    return replace(lin, weight=weight, span=short)


def _choose(ws: WindowSet, settings: Settings, season: int | None) -> AnchorChoice:
    """choose_anchor's choice on the lookback of `ws`."""
    t = settings.train
    if not t.residual:
        return AnchorChoice("none", None, reason="train.residual is false: no anchor")
    if t.anchor == "seasonal_naive":
        return AnchorChoice(
            "seasonal_naive" if season else "none",
            season,
            reason="train.anchor: seasonal_naive" if season else "no seasonal naive fits the lookback",
        )
    val = ws.starts["val"]  # scored a part of a panel's series at a time (evaluate.split_mase)
    median = _best_median(ws) if t.anchor == "seasonal_median" or ws.is_panel else None
    if t.anchor == "seasonal_median":
        if median is None:
            raise ConfigError(
                f"train.anchor: seasonal_median needs a lookback ({ws.meta.lookback}) that holds a natural season of "
                f"{ws.meta.name} ({ws.meta.seasons}) twice: set window.lookback or window.lookback_seasons"
            )
        return _median_choice(median[0], season, median[1], f"train.anchor: seasonal_median over {median[0]}")
    if t.anchor == "theta":
        theta = fit_theta_anchor(ws, settings, season or 1)
        scores = {"theta": theta.by_alpha[f"{theta.alpha:g}"]}  # its validation MASE, scored when it was chosen
        why = f"train.anchor: theta (season {season or 1}, alpha {theta.alpha:g})"
        return AnchorChoice("theta", season, theta, scores, why)
    lin = fit_linear_anchor(ws, settings)
    scores = {"linear": split_mase(ws, val, lambda s: linear_forecast(ws, s, lin))}
    if season:
        scores["seasonal_naive"] = split_mase(ws, val, lambda s: seasonal_naive(ws, s, season))
    if median is not None:
        key = f"seasonal_median {','.join(map(str, median[0]))}"
        scores[key] = median[1][",".join(map(str, median[0]))]
        if scores[key] < min(v for k, v in scores.items() if k != key):
            why = f"auto: the seasonal median over {median[0]} forecasts validation better than the other anchors"
            return _median_choice(median[0], season, scores, why)
    held = {"linear": lin}  # the choices held as a linear anchor
    # with season 1 the mean is the ridge halfway to the naive forecast, which its penalty already covers
    if season and season > 1 and not ws.is_panel and t.anchor in ("auto", "combined"):
        held["combined"] = combine_with_seasonal_naive(ws, lin, season)
        scores["combined"] = split_mase(ws, val, lambda s: linear_forecast(ws, s, held["combined"]))
        if t.anchor == "combined":
            return AnchorChoice("combined", season, held["combined"], scores, "train.anchor: combined")
        held["theta"] = fit_theta_anchor(ws, settings, season)
        held["combined_theta"] = mean_with_linear(lin, held["theta"].weight.astype(np.float64))
        scores["theta"] = held["theta"].by_alpha[f"{held['theta'].alpha:g}"]  # scored when its alpha was chosen
        scores["combined_theta"] = split_mase(ws, val, lambda s: linear_forecast(ws, s, held["combined_theta"]))
    if t.anchor in ("linear", "combined") or "seasonal_naive" not in scores:
        why = {
            "linear": "train.anchor: linear",
            "combined": "train.anchor: combined, but no seasonal naive (season > 1) to combine with, or a panel",
        }.get(t.anchor, "auto: the linear anchor (no seasonal naive fits the lookback)")
        return AnchorChoice("linear", season, lin, scores, why)
    order = ["seasonal_naive", *held]  # a tie keeps the earlier
    best = min(order, key=lambda k: (scores[k], order.index(k)))
    if best == "seasonal_naive":
        why = f"auto: seasonal naive ({season}) forecasts validation better than the linear anchors"
        return AnchorChoice("seasonal_naive", season, None, scores, why)
    what = {
        "linear": "the linear anchor",
        "combined": f"the mean of the linear anchor and seasonal naive ({season})",
        "theta": "the theta anchor",
        "combined_theta": "the mean of the linear and theta anchors",
    }[best]
    alpha = f" (season {season}, alpha {held['theta'].alpha:g})" if "theta" in best else ""
    why = f"auto: {what}{alpha} forecasts validation better"
    return AnchorChoice(best, season, held[best], scores, why)
