"""The promotion policy, as pure functions: no MLflow, no I/O.

A candidate becomes champion only if its ONNX export passed the parity gate, its intervals do not under-cover
(the empirical test coverage of each central interval it forecasts, e.g. 80% and 90%, at most
`coverage_tolerance` below nominal: an interval that misses more often than it says is a danger to a planner; one
that covers more is only wider than it needs to be, reported as its width), its interval score is not worse than the
bar's own empirical intervals' (by more than a tolerance, or significantly by the same test on per-window Winkler
scores: two bands of one quality differ by noise, and a point forecast that passed its test is not refused for it),
it beats the strongest baseline by the configured margin (a model that cannot beat
seasonal naive should not serve), and it beats the current champion (never replace a better model); "beats" meaning
a significant difference, not a lower average.

The evidence is per-window losses on the same windows, scored by the engine that serves: one window at every
forecast origin of the test split (stride 1). Windows h steps long at consecutive origins share h - 1 target rows,
so their losses are correlated up to h - 1 lags (and further where the errors themselves persist): the test is
Diebold and Mariano's (1995) on the loss differential d_t = loss_candidate_t - (1 - margin) * loss_rival_t,
one-sided (the candidate better), with a Newey-West (Bartlett) long-run variance of at least h - 1 lags, the
small-sample correction of Harvey, Leybourne and Newbold (1997) (the statistic scaled by
sqrt((n + 1 - 2h + h(h - 1)/n) / n)), read against Student's t with as many degrees of freedom as there are
independent forecast paths, i.e. windows a horizon apart, less one (HLN read it against n - 1, which counts
overlapping windows as independent and over-rejects on persistent errors: bench/promotion_power.py). h = 1: each
window is one forecast path and this is the test on non-overlapping origins.

The two mistakes cost differently. With no champion the user gets no forecast at all: a first champion needs
p < `first_significance` against the bar; a wrong replacement costs a working forecast: a challenger needs
p < `significance` against the champion (and against the bar). docs/forecasting.md says why.
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
    dof: int = 0  # degrees of freedom of the reference t (0: n - 1)
    h: int = 1  # the forecast horizon the windows span (1: non-overlapping)
    paths: int = 0  # the independent forecast paths counted (0: paths(n, h))


def newey_west_lag(n: int) -> int:
    """The usual automatic truncation lag, floor(4 (n/100)^(2/9)) (Newey and West 1994)."""
    return int(math.floor(4 * (n / 100) ** (2 / 9)))


def hac_lag(n: int, h: int = 1) -> int:
    """The long-run variance's truncation lag for windows at every origin: at least h - 1 (consecutive windows
    share h - 1 targets), at least Newey and West's automatic lag, at most n - 1."""
    return max(0, min(n - 1, max(h - 1, newey_west_lag(n))))


def paths(n: int, h: int = 1) -> int:
    """Independent forecast paths among n windows at consecutive origins: the windows a horizon apart."""
    return -(-n // max(h, 1))


def long_run_variance(d: np.ndarray, lag: int) -> float:
    """Bartlett-weighted sum of autocovariances of d up to `lag` (never negative)."""
    n = len(d)
    e = d - d.mean()
    var = float(e @ e) / n
    for k in range(1, min(lag, n - 1) + 1):
        var += 2 * (1 - k / (lag + 1)) * float(e[k:] @ e[:-k]) / n
    return max(var, 0.0)


def dm_test(d, lag: int | None = None, h: int = 1, dof: int | None = None, independent: int | None = None) -> DMResult:
    """Diebold-Mariano on the loss differential `d` (candidate minus rival) of windows at consecutive origins,
    each `h` steps long, HLN-corrected, one-sided. `lag`: default hac_lag(n, h); `dof`: default the independent
    paths less one (`independent`, default paths(n, h); n - 1 when h = 1).

    Identical losses (d all zero) give statistic 0 and p 0.5: no evidence either way."""
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    if n < 2 or not np.isfinite(d).all():
        raise ValueError(f"the Diebold-Mariano test needs at least 2 finite loss differentials, got {n}")
    h = max(int(h), 1)
    lag = hac_lag(n, h) if lag is None else int(lag)
    counted = paths(n, h) if independent is None else int(independent)
    dof = max(counted - 1, 1) if dof is None else int(dof)
    mean = float(d.mean())
    var = long_run_variance(d, lag)
    hln = (n + 1 - 2 * h + h * (h - 1) / n) / n
    if var == 0.0:  # every window differs by the same amount (e.g. identical forecasts)
        stat = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        stat = mean / math.sqrt(var / n) * math.sqrt(max(hln, 1.0 / n))
    return DMResult(stat, float(stdtr(dof, stat)), n, mean, lag, dof, h, counted)


@dataclass
class Comparison:
    """The candidate's and a rival's loss per window, on the same windows; lower is better. `horizon`: the steps
    each window spans when the windows start at consecutive origins (stride 1); 1 when they do not overlap."""

    rival: str  # what it is compared with: "seasonal_naive_336", "champion v3"
    candidate: np.ndarray
    other: np.ndarray
    margin: float = 0.0  # the candidate must beat (1 - margin) x the rival's loss
    horizon: int = 1
    # independent paths when the windows are not one series' consecutive origins: a panel's, each series' own
    # windows a horizon apart, summed (its series pool their paths); None: counted from n and the horizon
    independent: int | None = None

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

    @property
    def paths(self) -> int:
        """Independent forecast paths: windows a horizon apart (a panel: within each series, summed)."""
        return paths(self.n, self.horizon) if self.independent is None else self.independent

    def test(self) -> DMResult:
        return dm_test(self.candidate - (1 - self.margin) * self.other, h=self.horizon, independent=self.independent)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _num(x: float) -> float:
    return float(f"{x:.6g}")  # six figures: readable as a registry tag


def _evidence(r: DMResult) -> str:
    if r.h <= 1:
        return f"DM {r.statistic:.3g}, p {r.p_value:.3g}, {r.n} windows"
    return (
        f"DM {r.statistic:.3g}, p {r.p_value:.3g}, {r.n} windows at every origin, {r.paths or paths(r.n, r.h)} a "
        f"horizon apart; HAC lag {r.lag}"
    )


def coverage_misses(coverage: dict[str, tuple[float, float]] | None, tolerance: float) -> list[str]:
    """The intervals whose empirical coverage falls short of nominal by more than `tolerance`, as phrases:
    coverage maps an interval's name ("90") to (empirical coverage, nominal coverage), shares in 0..1. Covering
    more than nominal is not a miss (coverage_excess)."""
    out = []
    for name, (got, nominal) in sorted((coverage or {}).items(), key=lambda kv: kv[1][1]):
        if not math.isfinite(got) or got < nominal - tolerance:
            out.append(f"its {name}% interval covers {100 * got:.1f}% of test targets (nominal {100 * nominal:.0f}%)")
    return out


def coverage_excess(
    coverage: dict[str, tuple[float, float]] | None, tolerance: float, widths: dict[str, float] | None = None
) -> list[str]:
    """The intervals that cover more than nominal + `tolerance`: wider than they need to be (their mean width,
    in MASE units, when given). Reported, not refused: a cautious interval is inefficient, not dangerous."""
    out = []
    for name, (got, nominal) in sorted((coverage or {}).items(), key=lambda kv: kv[1][1]):
        if math.isfinite(got) and got > nominal + tolerance:
            w = (widths or {}).get(name)
            width = f", mean width {w:.3g}" if w is not None and math.isfinite(w) else ""
            out.append(f"its {name}% interval covers {100 * got:.1f}% (nominal {100 * nominal:.0f}%{width})")
    return out


IntervalScores = dict[str, Comparison | tuple[float, float]]


@dataclass(frozen=True)
class IntervalVerdict:
    name: str  # the interval: "90"
    candidate: float  # mean Winkler score, lower is better
    bar: float
    refused: bool
    why: str  # "" when not worse


def interval_verdicts(
    scores: IntervalScores | None, tolerance: float = 0.1, significance: float = 0.05
) -> list[IntervalVerdict]:
    """Each interval's Winkler score against the bar's empirical intervals': `scores` maps an interval's name to a
    Comparison of per-window scores on the same windows (or, with no per-window scores, the two means). Refused when
    the candidate's mean score is worse by more than `tolerance` (a share of the bar's), or worse by evidence: the
    one-sided Diebold-Mariano test of the per-window scores (the candidate worse), p < `significance`. A score worse
    by less than the tolerance and not significantly is noise between two bands of the same quality, not a worse
    band; a missing candidate score against a finite bar is refused."""
    out = []
    for name, v in sorted((scores or {}).items(), key=lambda kv: float(kv[0])):
        if isinstance(v, Comparison):
            cand, base = (float(v.candidate.mean()), float(v.other.mean())) if v.n else (math.nan, math.nan)
        else:
            cand, base = float(v[0]), float(v[1])
        if not math.isfinite(base) or (math.isfinite(cand) and cand <= base):
            out.append(IntervalVerdict(name, cand, base, False, ""))
            continue
        if not math.isfinite(cand):
            out.append(IntervalVerdict(name, cand, base, True, "no score"))
            continue
        worse = cand / base - 1 if base > 0 else math.inf
        test = None
        if isinstance(v, Comparison) and v.n >= 2 and np.isfinite(v.candidate).all() and np.isfinite(v.other).all():
            # low p: the candidate's band worse
            test = dm_test(v.other - v.candidate, h=v.horizon, independent=v.independent)
        by = f"{100 * worse:.1f}% worse"
        if worse > tolerance:
            why = f"{by}, more than the tolerance {100 * tolerance:g}% (evaluate.interval_score_tolerance)"
            out.append(IntervalVerdict(name, cand, base, True, why))
        elif test is not None and test.p_value < significance:
            out.append(IntervalVerdict(name, cand, base, True, f"{by}, significantly ({_evidence(test)})"))
        else:
            p = f", p {test.p_value:.3g}" if test is not None else ""
            why = f"{by}: within the tolerance {100 * tolerance:g}% and not significantly{p}"
            out.append(IntervalVerdict(name, cand, base, False, why))
    return out


def interval_score_losses(verdicts: list[IntervalVerdict], bar: str) -> list[str]:
    """The intervals the interval-score gate refuses (of interval_verdicts), as phrases."""
    return [
        f"its {v.name}% interval score {_fmt(v.candidate)} is worse than {bar}'s empirical interval's "
        f"{_fmt(v.bar)} ({v.why})"
        for v in verdicts
        if v.refused
    ]


def decide(
    candidate_name: str,
    baseline: Comparison,
    champion: Comparison | None = None,
    *,
    significance: float = 0.05,
    first_significance: float | None = None,
    min_windows: int = 10,
    parity_ok: bool = True,
    champion_version: int | None = None,
    metric: str = "mase",
    coverage: dict[str, tuple[float, float]] | None = None,
    coverage_tolerance: float = 0.05,
    widths: dict[str, float] | None = None,
    interval_scores: IntervalScores | None = None,
    interval_score_tolerance: float = 0.1,
) -> Decision:
    """Promote iff parity_ok, no interval under-covers (`coverage`: interval name -> (test coverage, nominal), none
    more than `coverage_tolerance` below nominal), no interval score is worse than the bar's empirical intervals' by
    more than `interval_score_tolerance` or by evidence at `significance` (`interval_scores`: name -> a Comparison
    of per-window Winkler scores, or (candidate, bar) means; interval_verdicts), and the candidate beats `baseline`
    by its margin and `champion` (if any), each significantly (one-sided Diebold-Mariano on at least `min_windows`
    windows a horizon apart): p < `first_significance` against the bar when there is no champion, p < `significance`
    otherwise and against the champion. Over-coverage is reported with the interval's width (`widths`), never refused.

    The reason is one sentence with the scores compared, the statistic, p-value and window count; the
    metrics (version tags) hold the same numbers."""
    first = significance if first_significance is None else first_significance
    metrics: dict = {
        "baseline_name": baseline.rival,
        "margin": baseline.margin,
        "significance": significance,
        "first_significance": first,
        "min_decision_paths": min_windows,
        "baseline_windows": baseline.n,
        "baseline_paths": baseline.paths,
    }
    if champion_version is not None:
        metrics["champion_version"] = champion_version

    if not parity_ok:
        return Decision(
            False, f"{candidate_name} not promoted: its ONNX export failed the parity check against PyTorch", metrics
        )
    verdicts = interval_verdicts(interval_scores, interval_score_tolerance, significance)
    metrics.update(_interval_metrics(coverage, widths, verdicts, coverage_tolerance, interval_score_tolerance))
    level = significance if champion is not None else first
    accuracy = _accuracy(
        candidate_name, baseline, champion, significance, level, min_windows, champion_version, metric, metrics
    )
    gates = []
    misses = coverage_misses(coverage, coverage_tolerance)
    if misses:
        gates.append(
            f"under-covering intervals: {'; '.join(misses)}: more than {100 * coverage_tolerance:g} points under "
            f"nominal (evaluate.coverage_tolerance {coverage_tolerance:g})"
        )
    worse = interval_score_losses(verdicts, baseline.rival)
    if worse:
        gates.append(f"{'; '.join(worse)} (evaluate.interval_score_gate)")
    note = _interval_note(coverage, coverage_tolerance, widths, verdicts, baseline.rival)
    if not gates:
        return Decision(accuracy.promote, accuracy.reason + note, accuracy.metrics)
    why = "; and ".join(gates)
    if accuracy.promote:
        return Decision(False, f"{candidate_name} not promoted: {why}{note}", accuracy.metrics)
    return Decision(False, f"{accuracy.reason}; and {why}{note}", accuracy.metrics)


def _interval_metrics(
    coverage: dict[str, tuple[float, float]] | None,
    widths: dict[str, float] | None,
    verdicts: list[IntervalVerdict],
    coverage_tolerance: float,
    interval_score_tolerance: float,
) -> dict:
    """The decision's interval metrics: coverage and over-coverage, width, the candidate's and the bar's Winkler score
    of each interval, and the tolerances they were read with."""
    metrics: dict = {}
    for name, (got, nominal) in (coverage or {}).items():
        metrics[f"coverage_{name}"] = _num(got) if math.isfinite(got) else None
        if math.isfinite(got) and got > nominal:
            metrics[f"over_coverage_{name}"] = _num(got - nominal)
    for name, w in (widths or {}).items():
        metrics[f"width_{name}"] = _num(w) if math.isfinite(w) else None
    for v in verdicts:
        metrics[f"winkler_{v.name}"] = _num(v.candidate) if math.isfinite(v.candidate) else None
        metrics[f"bar_winkler_{v.name}"] = _num(v.bar) if math.isfinite(v.bar) else None
    if verdicts:
        metrics["interval_score_tolerance"] = interval_score_tolerance
    if coverage:
        metrics["coverage_tolerance"] = coverage_tolerance
    return metrics


def _interval_note(
    coverage: dict[str, tuple[float, float]] | None,
    coverage_tolerance: float,
    widths: dict[str, float] | None,
    verdicts: list[IntervalVerdict],
    rival: str,
) -> str:
    """What the reason adds without refusing: intervals wider than needed, and interval scores behind the bar's by
    less than the tolerance and not significantly."""
    excess = coverage_excess(coverage, coverage_tolerance, widths)
    note = f"; wider than needed: {'; '.join(excess)}" if excess else ""
    level_with = [
        f"its {v.name}% interval score {_fmt(v.candidate)} vs {rival}'s empirical {_fmt(v.bar)} ({v.why})"
        for v in verdicts
        if v.why and not v.refused
    ]
    if level_with:
        note += f"; interval score level with the bar's: {'; '.join(level_with)}"
    return note


def _accuracy(
    candidate_name: str,
    baseline: Comparison,
    champion: Comparison | None,
    significance: float,
    bar_level: float,
    min_windows: int,
    champion_version: int | None,
    metric: str,
    metrics: dict,
) -> Decision:
    """The accuracy half of `decide`: the baseline (at `bar_level`) and the champion (at `significance`), each by a
    significant difference."""
    champ_label = f"champion v{champion_version}" if champion_version is not None else "champion"
    refused = _too_little_evidence(candidate_name, baseline, champion, min_windows, champ_label, metric, metrics)
    if refused is not None:
        return refused
    beaten, text = _against_bar(candidate_name, baseline, champion is not None, bar_level, metric, metrics)
    if not beaten:
        return Decision(False, text, metrics)
    if champion is None:
        return Decision(True, f"{text}; no champion yet", metrics)
    return _against_champion(text, champion, champ_label, significance, metrics)


def _too_little_evidence(
    candidate_name: str,
    baseline: Comparison,
    champion: Comparison | None,
    min_windows: int,
    champ_label: str,
    metric: str,
    metrics: dict,
) -> Decision | None:
    """A refusal when the test windows cannot decide (too few paths, a score not finite, too few after the rows the
    champion trained on), else None; the mean scores go into `metrics` either way once they are known."""
    if baseline.paths < max(min_windows, 2) or baseline.n < 2:
        return Decision(
            False,
            f"{candidate_name} not promoted: {baseline.paths} test windows (one per horizon, "
            f"none overlapping) are too few for a decision (evaluate.min_decision_paths "
            f"{min_windows})",
            metrics,
        )
    if not np.isfinite(baseline.candidate).all():
        return Decision(
            False, f"{candidate_name} not promoted: its {metric.upper()} is not finite on every test window", metrics
        )
    cand, base = float(baseline.candidate.mean()), float(baseline.other.mean())
    gain = (1 - cand / base) * 100 if base > 0 else float("nan")
    metrics.update(
        {
            f"candidate_{metric}": _num(cand),
            f"baseline_{metric}": _num(base),
            f"{metric}_gain_pct": round(gain, 2) if math.isfinite(gain) else None,
        }
    )
    if champion is None:
        return None
    metrics["champion_windows"] = champion.n
    metrics["champion_paths"] = champion.paths
    if champion.n:
        metrics.update(
            {
                f"champion_{metric}": _num(float(champion.other.mean())),
                f"candidate_{metric}_vs_champion": _num(float(champion.candidate.mean())),
            }
        )
    if champion.paths < max(min_windows, 2) or champion.n < 2:  # no evidence either way: the champion stays
        return Decision(
            False,
            f"{candidate_name} not promoted: only {champion.paths} test windows lie after the "
            f"rows {champ_label} trained on (evaluate.min_decision_paths {min_windows}): "
            f"champion unchanged",
            metrics,
        )
    return None


def _against_bar(
    candidate_name: str, baseline: Comparison, has_champion: bool, bar_level: float, metric: str, metrics: dict
) -> tuple[bool, str]:
    """Whether the candidate beats the bar significantly (p < `bar_level`), and the sentence that says so."""
    cand, base = float(baseline.candidate.mean()), float(baseline.other.mean())
    gain = (1 - cand / base) * 100 if base > 0 else float("nan")
    bt = baseline.test()
    metrics.update(
        {"baseline_dm": _num(bt.statistic), "baseline_p_value": _num(bt.p_value), "baseline_hac_lag": bt.lag}
    )
    margin_txt = f"margin {baseline.margin * 100:.3g}%"
    scores = f"{candidate_name} {metric.upper()} {_fmt(cand)} vs {baseline.rival} {_fmt(base)}"
    setting = "evaluate.significance" if has_champion else "evaluate.first_significance, no champion yet"
    if not bt.p_value < bar_level:
        how = f"{gain:.1f}% better" if cand < base else "not better"
        suffix = "" if has_champion else ": no champion"
        return False, (
            f"{scores} ({how}): not significantly better by the {margin_txt} ({_evidence(bt)}; "
            f"needs p < {bar_level:g}, {setting}){suffix}"
        )
    return True, f"{scores}: {gain:.1f}% better ({margin_txt}; {_evidence(bt)})"


def _against_champion(
    beat: str, champion: Comparison, champ_label: str, significance: float, metrics: dict
) -> Decision:
    """The candidate that beat the bar (`beat`) against the champion: promoted iff significantly better."""
    ct = champion.test()
    metrics.update({"champion_dm": _num(ct.statistic), "champion_p_value": _num(ct.p_value)})
    scores = f"{champ_label} {_fmt(float(champion.other.mean()))} with {_fmt(float(champion.candidate.mean()))}"
    if ct.p_value < significance:
        return Decision(True, f"{beat}; and beats {scores} ({_evidence(ct)})", metrics)
    return Decision(
        False,
        f"{beat}; but not significantly better than {scores} ({_evidence(ct)}; needs "
        f"p < {significance:g}, evaluate.significance): champion unchanged",
        metrics,
    )


def decide_live(
    challenger_version: int | str,
    champion_version: int | str,
    evidence: Comparison | None,
    window: dict,
    *,
    scored: tuple[int, int] = (0, 0),
    min_forecasts: int = 30,
    significance: float = 0.05,
) -> Decision:
    """Promotion on live evidence: the challenger replaces the champion iff, on at least `min_forecasts` paired live
    forecast paths (`window["paired"]`: same series, same origin, both scored), its loss is significantly lower
    than the champion's under the one-sided Diebold-Mariano test of `decide` (HAC lag >= the paths' overlap - 1,
    HLN correction, df = independent paths - 1) at `significance`. `evidence`: one loss per origin, the challenger's
    as the candidate (monitoring/live.comparison); `scored`: the forecast paths scored of the challenger and of the
    champion, for the refusal. The metrics (version tags) hold the statistic and the live window."""
    cand, champ = f"v{challenger_version}", f"champion v{champion_version}"
    n = int(window.get("paired", 0))
    metrics: dict = {
        "evidence": "live",
        "champion_version": int(champion_version) if str(champion_version).isdigit() else str(champion_version),
        "significance": significance,
        "live_min_forecasts": min_forecasts,
        "live_paired": n,
        "live_origins": int(window.get("origins", 0)),
        "live_first_origin": window.get("first_origin", ""),
        "live_last_origin": window.get("last_origin", ""),
        "live_overlap": int(window.get("overlap", 1)),
    }
    if evidence is None or n < min_forecasts:
        return Decision(
            False,
            f"{cand} not promoted: {n} paired live forecasts of the {min_forecasts} needed "
            f"(monitor.live_min_forecasts; scored: {scored[0]} of the challenger, {scored[1]} of the champion)",
            metrics,
        )
    if evidence.paths < 2:
        return Decision(
            False,
            f"{cand} not promoted: its {n} paired live forecasts come from {evidence.n} origin(s), "
            f"{evidence.paths} a horizon apart: too few for a test",
            metrics,
        )
    ct = evidence.test()
    mine, theirs = float(evidence.candidate.mean()), float(evidence.other.mean())
    gain = (1 - mine / theirs) * 100 if theirs > 0 else float("nan")
    metrics.update(
        {
            "candidate_mase_live": _num(mine),
            "champion_mase_live": _num(theirs),
            "live_gain_pct": round(gain, 2) if math.isfinite(gain) else None,
            "champion_dm": _num(ct.statistic),
            "champion_p_value": _num(ct.p_value),
            "champion_hac_lag": ct.lag,
            "live_dof": ct.dof,
        }
    )
    span = f"{n} paired live forecasts from {window.get('first_origin')} to {window.get('last_origin')}"
    scores = f"{cand} live MASE {_fmt(mine)} vs {champ} {_fmt(theirs)} on {span}"
    if ct.p_value < significance:
        return Decision(True, f"{scores}: {gain:.1f}% better ({_evidence(ct)}); promoted on live evidence", metrics)
    how = f"{gain:.1f}% better" if mine < theirs else "not better"
    return Decision(
        False,
        f"{cand} not promoted: {scores} ({how}): not significantly better ({_evidence(ct)}; needs p < "
        f"{significance:g}, evaluate.significance): champion unchanged",
        metrics,
    )
