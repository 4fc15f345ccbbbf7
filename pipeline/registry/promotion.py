"""The promotion policy, as pure functions: no MLflow, no I/O.

A candidate becomes champion only if its ONNX export passed the parity gate, its intervals are calibrated
(the empirical test coverage of each central interval it forecasts, e.g. 80% and 90%, within
`coverage_tolerance` of nominal: an interval a planner cannot trust should not serve), it beats the
strongest baseline by the configured margin (a model that cannot beat seasonal naive should not serve),
and it beats the current champion (never replace a better model); "beats" meaning a significant
difference, not a lower average.

The evidence is per-window losses on the same windows (scored by the engine that serves), one window
per forecast origin with origins a horizon apart, so no two windows share a target (overlapping
windows repeat the same errors and are not independent). The test is Diebold and Mariano's (1995) on
the loss differential d_t = loss_candidate_t - (1 - margin) * loss_rival_t, one-sided (the candidate
better), with a Newey-West (Bartlett) long-run variance for what correlation remains between
consecutive origins, and the small-sample correction of Harvey, Leybourne and Newbold (1997):
the statistic scaled by sqrt((n + 1 - 2h + h(h - 1)/n) / n) and read against Student's t with n - 1
degrees of freedom. h = 1: each window is one forecast path and origins do not overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import stdtr  # Student's t CDF


@dataclass
class Decision:
    promote: bool
    reason: str
    metrics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DMResult:
    statistic: float  # HLN-corrected; negative when the candidate's loss is lower
    p_value: float  # one-sided: the chance of a statistic this low if both were equally accurate
    n: int  # windows (forecast origins)
    mean_diff: float  # mean loss differential
    lag: int  # Newey-West truncation lag


def newey_west_lag(n: int) -> int:
    """The usual automatic truncation lag, floor(4 (n/100)^(2/9)) (Newey and West 1994)."""
    return int(math.floor(4 * (n / 100) ** (2 / 9)))


def long_run_variance(d: np.ndarray, lag: int) -> float:
    """Bartlett-weighted sum of autocovariances of d up to `lag` (never negative)."""
    n = len(d)
    e = d - d.mean()
    var = float(e @ e) / n
    for k in range(1, min(lag, n - 1) + 1):
        var += 2 * (1 - k / (lag + 1)) * float(e[k:] @ e[:-k]) / n
    return max(var, 0.0)


def dm_test(d, lag: int | None = None, h: int = 1) -> DMResult:
    """Diebold-Mariano on the loss differential `d` (candidate minus rival), HLN-corrected, one-sided.

    Identical losses (d all zero) give statistic 0 and p 0.5: no evidence either way."""
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    if n < 2 or not np.isfinite(d).all():
        raise ValueError(f"the Diebold-Mariano test needs at least 2 finite loss differentials, got {n}")
    lag = newey_west_lag(n) if lag is None else int(lag)
    mean = float(d.mean())
    var = long_run_variance(d, lag)
    if var == 0.0:  # every window differs by the same amount (e.g. identical forecasts)
        stat = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        stat = mean / math.sqrt(var / n) * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    return DMResult(stat, float(stdtr(n - 1, stat)), n, mean, lag)


@dataclass
class Comparison:
    """The candidate's and a rival's loss per window, on the same windows; lower is better."""

    rival: str  # what it is compared with: "seasonal_naive_336", "champion v3"
    candidate: np.ndarray
    other: np.ndarray
    margin: float = 0.0  # the candidate must beat (1 - margin) x the rival's loss

    def __post_init__(self):
        self.candidate = np.asarray(self.candidate, dtype=np.float64)
        self.other = np.asarray(self.other, dtype=np.float64)
        if self.candidate.shape != self.other.shape or self.candidate.ndim != 1:
            raise ValueError(
                f"losses of the candidate {self.candidate.shape} and of {self.rival} "
                f"{self.other.shape} must be one per window, on the same windows"
            )

    @property
    def n(self) -> int:
        return len(self.candidate)

    def test(self) -> DMResult:
        return dm_test(self.candidate - (1 - self.margin) * self.other)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _num(x: float) -> float:
    return float(f"{x:.6g}")  # six figures: readable as a registry tag


def _evidence(r: DMResult) -> str:
    return f"DM {r.statistic:.3g}, p {r.p_value:.3g}, {r.n} windows"


def coverage_misses(coverage: dict[str, tuple[float, float]] | None, tolerance: float) -> list[str]:
    """The intervals whose empirical coverage misses nominal by more than `tolerance`, as phrases:
    coverage maps an interval's name ("90") to (empirical coverage, nominal coverage), shares in 0..1."""
    out = []
    for name, (got, nominal) in sorted((coverage or {}).items(), key=lambda kv: kv[1][1]):
        if not math.isfinite(got) or abs(got - nominal) > tolerance:
            out.append(f"its {name}% interval covers {100 * got:.1f}% of test targets (nominal {100 * nominal:.0f}%)")
    return out


def decide(
    candidate_name: str,
    baseline: Comparison,
    champion: Comparison | None = None,
    *,
    significance: float = 0.05,
    min_windows: int = 10,
    parity_ok: bool = True,
    champion_version: int | None = None,
    metric: str = "mase",
    coverage: dict[str, tuple[float, float]] | None = None,
    coverage_tolerance: float = 0.05,
) -> Decision:
    """Promote iff parity_ok, its intervals are calibrated (`coverage`: interval name -> (test coverage, nominal),
    each within `coverage_tolerance`), and the candidate beats `baseline` by its margin and `champion` (if any),
    each significantly (one-sided Diebold-Mariano p < significance on at least `min_windows` windows).

    The reason is one sentence with the scores compared, the statistic, p-value and window count; the
    metrics (version tags) hold the same numbers."""
    m = metric.upper()
    metrics: dict = {
        "baseline_name": baseline.rival,
        "margin": baseline.margin,
        "significance": significance,
        "min_test_windows": min_windows,
        "baseline_windows": baseline.n,
    }
    if champion_version is not None:
        metrics["champion_version"] = champion_version
    champ_label = f"champion v{champion_version}" if champion_version is not None else "champion"

    if not parity_ok:
        return Decision(
            False, f"{candidate_name} not promoted: its ONNX export failed the parity check against PyTorch", metrics
        )
    for name, (got, nominal) in (coverage or {}).items():
        metrics[f"coverage_{name}"] = _num(got) if math.isfinite(got) else None
    if coverage:
        metrics["coverage_tolerance"] = coverage_tolerance
    misses = coverage_misses(coverage, coverage_tolerance)
    accuracy = _accuracy(
        candidate_name, baseline, champion, significance, min_windows, champion_version, metric, metrics
    )
    if not misses:
        return accuracy
    why = (
        f"uncalibrated intervals: {'; '.join(misses)}: more than {100 * coverage_tolerance:g} points off nominal "
        f"(evaluate.coverage_tolerance {coverage_tolerance:g})"
    )
    if accuracy.promote:
        return Decision(False, f"{candidate_name} not promoted: {why}", accuracy.metrics)
    return Decision(False, f"{accuracy.reason}; and {why}", accuracy.metrics)


def _accuracy(
    candidate_name: str,
    baseline: Comparison,
    champion: Comparison | None,
    significance: float,
    min_windows: int,
    champion_version: int | None,
    metric: str,
    metrics: dict,
) -> Decision:
    """The accuracy half of `decide`: the baseline and the champion, each by a significant difference."""
    m = metric.upper()
    champ_label = f"champion v{champion_version}" if champion_version is not None else "champion"
    if baseline.n < max(min_windows, 2):
        return Decision(
            False,
            f"{candidate_name} not promoted: {baseline.n} test windows (one per horizon, "
            f"none overlapping) are too few for a decision (evaluate.min_test_windows "
            f"{min_windows})",
            metrics,
        )
    if not np.isfinite(baseline.candidate).all():
        return Decision(False, f"{candidate_name} not promoted: its {m} is not finite on every test window", metrics)
    cand, base = float(baseline.candidate.mean()), float(baseline.other.mean())
    gain = (1 - cand / base) * 100 if base > 0 else float("nan")
    metrics.update(
        {
            f"candidate_{metric}": _num(cand),
            f"baseline_{metric}": _num(base),
            f"{metric}_gain_pct": round(gain, 2) if math.isfinite(gain) else None,
        }
    )
    if champion is not None:
        metrics["champion_windows"] = champion.n
        if champion.n:
            metrics.update(
                {
                    f"champion_{metric}": _num(float(champion.other.mean())),
                    f"candidate_{metric}_vs_champion": _num(float(champion.candidate.mean())),
                }
            )
        if champion.n < max(min_windows, 2):  # no evidence either way: the champion stays
            return Decision(
                False,
                f"{candidate_name} not promoted: only {champion.n} test windows lie after the "
                f"rows {champ_label} trained on (evaluate.min_test_windows {min_windows}): "
                f"champion unchanged",
                metrics,
            )

    bt = baseline.test()
    metrics.update({"baseline_dm": _num(bt.statistic), "baseline_p_value": _num(bt.p_value)})
    margin_txt = f"margin {baseline.margin * 100:.3g}%"
    scores = f"{candidate_name} {m} {_fmt(cand)} vs {baseline.rival} {_fmt(base)}"
    if not bt.p_value < significance:
        how = f"{gain:.1f}% better" if cand < base else "not better"
        suffix = "" if champion is not None else ": no champion"
        return Decision(
            False,
            f"{scores} ({how}): not significantly better by the {margin_txt} ({_evidence(bt)}; "
            f"needs p < {significance:g}){suffix}",
            metrics,
        )
    beat = f"{scores}: {gain:.1f}% better ({margin_txt}; {_evidence(bt)})"
    if champion is None:
        return Decision(True, f"{beat}; no champion yet", metrics)

    ct = champion.test()
    metrics.update({"champion_dm": _num(ct.statistic), "champion_p_value": _num(ct.p_value)})
    scores = f"{champ_label} {_fmt(float(champion.other.mean()))} with {_fmt(float(champion.candidate.mean()))}"
    if ct.p_value < significance:
        return Decision(True, f"{beat}; and beats {scores} ({_evidence(ct)})", metrics)
    return Decision(
        False,
        f"{beat}; but not significantly better than {scores} ({_evidence(ct)}; needs "
        f"p < {significance:g}): champion unchanged",
        metrics,
    )
