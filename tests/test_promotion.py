"""The promotion policy: pure, no MLflow. A Diebold-Mariano test on per-window losses decides."""

import math

import numpy as np
import pytest

from cellcast.pipeline.registry.promotion import (
    Comparison,
    Decision,
    decide,
    dm_test,
    hac_lag,
    long_run_variance,
    newey_west_lag,
    paths,
)


def t3_cdf(t: float) -> float:
    """Student's t with 3 degrees of freedom, in closed form (no library)."""
    u = t / math.sqrt(3)
    return 0.5 + (u / (1 + u * u) + math.atan(u)) / math.pi


def test_dm_statistic_against_a_hand_computed_case():
    # d = (-1, -3, -2, -2): mean -2, deviations (1, -1, 0, 0)
    # gamma0 = (1 + 1) / 4 = 0.5; gamma1 = (1 * -1 + -1 * 0 + 0 * 0) / 4 = -0.25
    # Newey-West lag for n = 4: floor(4 * 0.04^(2/9)) = floor(1.96) = 1, Bartlett weight 1 - 1/2 = 0.5
    # long-run variance 0.5 + 2 * 0.5 * -0.25 = 0.25; DM = -2 / sqrt(0.25 / 4) = -8
    # HLN (h = 1): x sqrt((4 + 1 - 2 + 0) / 4) = sqrt(3)/2, so -4 sqrt(3); p = P(t_3 <= -4 sqrt(3))
    r = dm_test([-1, -3, -2, -2])
    assert newey_west_lag(4) == 1 and r.lag == 1 and r.n == 4 and r.mean_diff == -2
    assert r.statistic == pytest.approx(-4 * math.sqrt(3), rel=1e-12)
    assert r.p_value == pytest.approx(t3_cdf(-4 * math.sqrt(3)), rel=1e-9)
    assert r.p_value == pytest.approx(0.0030827, abs=1e-7)
    # with no lag the variance is gamma0 alone: DM = -2 / sqrt(0.5 / 4), HLN as above
    assert dm_test([-1, -3, -2, -2], lag=0).statistic == pytest.approx(-2 / math.sqrt(0.125) * math.sqrt(0.75))


def test_dm_is_symmetric_and_identical_losses_carry_no_evidence():
    rng = np.random.default_rng(0)
    d = rng.standard_normal(40) - 0.5
    a, b = dm_test(d), dm_test(-d)
    assert a.statistic == pytest.approx(-b.statistic) and a.p_value == pytest.approx(1 - b.p_value)
    same = dm_test(np.zeros(30))
    assert same.statistic == 0 and same.p_value == 0.5


def losses(mean: float, n: int = 30, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    return mean + noise * np.random.default_rng(seed).standard_normal(n)


def test_identical_forecasts_are_not_promoted_over_the_champion():
    cand = losses(0.5)
    base = Comparison("seasonal_naive_24", cand, losses(1.0, seed=1), margin=0.02)
    d = decide("lstm", base, Comparison("champion v3", cand, cand.copy()), champion_version=3)
    assert not d.promote
    assert "not significantly better than champion v3" in d.reason and "champion unchanged" in d.reason
    assert "DM 0, p 0.5, 30 windows" in d.reason
    assert (
        d.metrics["champion_dm"] == 0 and d.metrics["champion_p_value"] == 0.5 and d.metrics["champion_windows"] == 30
    )


def test_clearly_better_is_promoted_with_the_evidence_in_reason_and_tags():
    d = decide("lstm", Comparison("seasonal_naive_336", losses(0.28), losses(0.31, seed=1), margin=0.02))
    assert isinstance(d, Decision) and d.promote
    assert d.reason.startswith("lstm MASE 0.2") and "vs seasonal_naive_336 0.3" in d.reason
    assert "% better (margin 2%; DM -" in d.reason and ", 30 windows); no champion yet" in d.reason
    m = d.metrics
    assert m["baseline_name"] == "seasonal_naive_336" and m["baseline_windows"] == 30
    assert m["baseline_dm"] < 0 and m["baseline_p_value"] < 0.05 and m["significance"] == 0.05
    assert m["candidate_mase"] == pytest.approx(losses(0.28).mean(), rel=1e-5)

    champ = Comparison("champion v2", losses(0.28)[:20], losses(0.33, n=20, seed=2))
    d = decide("lstm", Comparison("naive", losses(0.28), losses(0.4, seed=1), 0.02), champ, champion_version=2)
    assert d.promote and "and beats champion v2 0.3" in d.reason and "20 windows" in d.reason
    assert d.metrics["champion_windows"] == 20 and d.metrics["champion_p_value"] < 0.05


def test_few_windows_are_refused_with_the_count():
    d = decide("gru", Comparison("naive", losses(0.1, n=6), losses(1.0, n=6)), min_windows=10)
    assert not d.promote
    assert d.reason == (
        "gru not promoted: 6 test windows (one per horizon, none overlapping) are too few for a "
        "decision (evaluate.min_decision_paths 10)"
    )
    # enough windows against the baseline, too few after the champion's training rows
    champ = Comparison("champion v4", losses(0.1, n=3), losses(0.5, n=3))
    d = decide("gru", Comparison("naive", losses(0.1), losses(1.0)), champ, min_windows=10, champion_version=4)
    assert not d.promote and d.reason == (
        "gru not promoted: only 3 test windows lie after the rows champion v4 "
        "trained on (evaluate.min_decision_paths 10): champion unchanged"
    )


def test_a_lower_average_within_noise_is_not_enough():
    # 3% better on average, but the windows disagree: no significant gain beyond the 2% margin
    base = losses(1.0, noise=0.5, seed=1)
    d = decide("rnn", Comparison("naive", base * 0.97 + losses(0, noise=0.5, seed=2), base, margin=0.02))
    assert not d.promote and "not significantly better by the margin 2%" in d.reason and "no champion" in d.reason
    # the same mean with a consistent gain on every window is
    assert decide("rnn", Comparison("naive", base * 0.95, base, margin=0.02)).promote


def test_the_margin_is_part_of_the_test():
    base = losses(1.0)
    # exactly 1% better on every window: beats the baseline, not by a 2% margin (the differential is positive)
    d = decide("rnn", Comparison("naive", base * 0.99, base, margin=0.02))
    assert not d.promote and d.metrics["baseline_dm"] > 0
    assert decide("rnn", Comparison("naive", base * 0.99, base, margin=0.0)).promote


def test_not_beating_the_baseline_says_no_champion():
    d = decide("gru", Comparison("naive", losses(1.2), losses(1.0, seed=1), 0.02))
    assert not d.promote and "(not better): not significantly better" in d.reason and d.reason.endswith("no champion")


def test_parity_failure_blocks_even_a_better_model():
    d = decide("lstm", Comparison("naive", losses(0.1), losses(1.0)), parity_ok=False)
    assert not d.promote and "parity" in d.reason


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_candidate_is_rejected(bad):
    cand = losses(0.1)
    cand[3] = bad
    d = decide("lstm", Comparison("naive", cand, losses(1.0)))
    assert not d.promote and "not finite" in d.reason


def test_losses_must_be_on_the_same_windows():
    with pytest.raises(ValueError, match="same windows"):
        Comparison("naive", losses(0.1, n=5), losses(1.0, n=6))


def test_the_coverage_gate_refuses_under_coverage_and_reports_over_coverage_as_width():
    """A clearly better forecast whose 90% interval covers 74.7% of the test targets is not promoted; one whose
    80% interval covers 85.8% (too wide, not dangerous) is, and the decision says how wide."""
    better = Comparison("seasonal_naive_336", losses(0.28), losses(0.31, seed=1), margin=0.02)
    calibrated = {"80": (0.812, 0.8), "90": (0.887, 0.9)}
    ok = decide("ensemble", better, coverage=calibrated, coverage_tolerance=0.05)
    assert ok.promote and ok.metrics["coverage_90"] == 0.887 and ok.metrics["coverage_tolerance"] == 0.05
    assert "wider than needed" not in ok.reason and ok.metrics["over_coverage_80"] == pytest.approx(0.012)

    d = decide("ensemble", better, coverage={"80": (0.62, 0.8), "90": (0.747, 0.9)}, coverage_tolerance=0.05)
    assert not d.promote
    assert d.reason == (
        "ensemble not promoted: under-covering intervals: its 80% interval covers 62.0% of test targets "
        "(nominal 80%); its 90% interval covers 74.7% of test targets (nominal 90%): more than 5 points "
        "under nominal (evaluate.coverage_tolerance 0.05)"
    )
    assert d.metrics["coverage_80"] == 0.62
    # too wide is promoted, and said: coverage and mean width in the reason and the metrics
    wide = decide("gru", better, coverage={"80": (0.858, 0.8), "90": (0.99, 0.9)}, widths={"80": 1.25, "90": 2.5})
    assert wide.promote
    assert wide.reason.endswith(
        "; wider than needed: its 80% interval covers 85.8% (nominal 80%, mean width 1.25); its 90% interval "
        "covers 99.0% (nominal 90%, mean width 2.5)"
    )
    assert wide.metrics["width_80"] == 1.25 and wide.metrics["over_coverage_90"] == pytest.approx(0.09)
    # the tolerance applies below nominal only
    assert decide("gru", better, coverage={"90": (0.86, 0.9)}, coverage_tolerance=0.05).promote
    assert not decide("gru", better, coverage={"90": (0.84, 0.9)}, coverage_tolerance=0.05).promote
    assert not decide("gru", better, coverage={"90": (float("nan"), 0.9)}).promote
    # a candidate that fails both says both: the accuracy first, then the intervals
    tie = Comparison("naive", losses(0.3), losses(0.3, seed=1), margin=0.02)
    both = decide("rnn", tie, coverage={"90": (0.848, 0.9)})
    assert not both.promote and "not significantly better by the margin 2%" in both.reason
    assert both.reason.endswith(
        "; and under-covering intervals: its 90% interval covers 84.8% of test targets "
        "(nominal 90%): more than 5 points under nominal (evaluate.coverage_tolerance 0.05)"
    )
    # a point forecaster has no interval to check
    assert decide("gru", better, coverage={}).promote and decide("gru", better).promote


def winkler(mean: float, n: int = 120, h: int = 4, seed: int = 0, common: np.ndarray | None = None) -> np.ndarray:
    """Per-window Winkler scores of windows at consecutive origins, `h` steps long: a moving average of h draws, so
    neighbours share h - 1 of them as overlapping windows' scores do; right-skewed (a miss costs 2 / alpha). `common`:
    the windows' shared difficulty (a storm is hard for every band), times this band's own noise."""
    rng = np.random.default_rng(seed)
    draws = rng.gamma(3.0, 1 / 3.0, n + h - 1) if common is None else common * np.exp(0.15 * rng.standard_normal(n))
    return mean * np.convolve(draws, np.ones(h) / h, mode="valid") if common is None else mean * draws


def test_the_interval_score_gate_refuses_a_clearly_worse_band_not_two_bands_of_one_quality():
    better = Comparison("seasonal_naive_48", losses(0.28), losses(0.31, seed=1), margin=0.02)
    cov = {"80": (0.8, 0.8), "90": (0.9, 0.9)}
    hard = winkler(1.0, seed=1)  # how hard each window is, for any band
    bar = winkler(3.0, seed=2, common=hard)
    # two bands of one quality (the same scores but for each band's own noise): whichever mean is lower, no refusal
    for seed in range(3, 13):
        same = {"90": Comparison("seasonal_naive_48", winkler(3.0, seed=seed, common=hard), bar, horizon=4)}
        assert decide("gru", better, coverage=cov, interval_scores=same).promote, seed
    # 20% worse: refused by the tolerance whatever the test says
    worse = Comparison("seasonal_naive_48", winkler(3.6, seed=3, common=hard), bar, horizon=4)
    d = decide("gru", better, coverage=cov, interval_scores={"90": worse})
    assert not d.promote and d.metrics["bar_winkler_90"] == pytest.approx(bar.mean(), rel=1e-5)
    assert "more than the tolerance 10% (evaluate.interval_score_tolerance)" in d.reason
    assert d.reason.startswith("gru not promoted: its 90% interval score")
    # 4% worse on every window (a consistently wider band): inside the tolerance but significant, refused
    wider = Comparison("seasonal_naive_48", bar * 1.04 + 0.01 * winkler(1.0, seed=3), bar, horizon=4)
    d = decide("gru", better, coverage=cov, interval_scores={"90": wider})
    assert not d.promote and "significantly (DM" in d.reason and "(evaluate.interval_score_gate)" in d.reason
    # 4% worse by noise: inside the tolerance and not significant, promoted, and the reason says so
    noisy = Comparison("seasonal_naive_48", bar[::-1] * 1.04, bar, horizon=4)
    d = decide("gru", better, coverage=cov, interval_scores={"90": noisy})
    assert d.promote and "interval score level with the bar's: its 90% interval score" in d.reason
    assert "within the tolerance 10% and not significantly" in d.reason
    # a stricter tolerance refuses what the looser one let through
    assert not decide("gru", better, coverage=cov, interval_scores={"90": noisy}, interval_score_tolerance=0.02).promote


def test_the_interval_score_gate_on_means_alone_reads_the_tolerance():
    """Without per-window scores (a panel) only the tolerance applies; a missing bar score is no gate."""
    better = Comparison("seasonal_naive_48", losses(0.28), losses(0.31, seed=1), margin=0.02)
    cov = {"80": (0.8, 0.8), "90": (0.9, 0.9)}
    ok = decide("gru", better, coverage=cov, interval_scores={"80": (2.0, 2.5), "90": (3.1, 3.0)})
    assert ok.promote and ok.metrics["winkler_80"] == 2.0 and ok.metrics["bar_winkler_80"] == 2.5
    d = decide("gru", better, coverage=cov, interval_scores={"80": (2.0, 2.5), "90": (3.6, 3.0)})
    assert not d.promote
    assert d.reason == (
        "gru not promoted: its 90% interval score 3.6 is worse than seasonal_naive_48's empirical interval's 3 "
        "(20.0% worse, more than the tolerance 10% (evaluate.interval_score_tolerance)) (evaluate.interval_score_gate)"
    )
    assert decide("gru", better, coverage=cov, interval_scores={"90": (3.6, float("nan"))}).promote
    assert not decide("gru", better, coverage=cov, interval_scores={"90": (float("nan"), 3.0)}).promote


def test_every_origin_dm_uses_at_least_h_minus_1_lags_and_counts_paths_not_windows():
    rng = np.random.default_rng(3)
    h, n = 48, 529  # 12 days of half-hourly windows, one at every origin
    assert paths(n, h) == 12 and paths(12, 1) == 12 and hac_lag(n, h) == 47 and hac_lag(12, 1) == newey_west_lag(12)
    assert hac_lag(30, 48) == 29  # never past the series
    d = np.convolve(rng.standard_normal(n + h - 1), np.ones(h) / h, mode="valid") - 0.2  # an MA(h-1) differential
    r = dm_test(d, h=h)
    assert r.lag == 47 and r.dof == 11 and r.h == 48 and r.n == n
    hln = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    stat = d.mean() / math.sqrt(long_run_variance(d, 47) / n) * hln
    assert r.statistic == pytest.approx(stat, rel=1e-12)
    from scipy.stats import t

    assert r.p_value == pytest.approx(t.cdf(stat, 11), rel=1e-9)
    # a Comparison of every-origin windows carries the horizon: the test, the path count, the reason
    c = Comparison("seasonal_naive_336", 1.0 + d, 1.0 + np.zeros(n), margin=0.0, horizon=h)
    assert c.paths == 12 and c.test() == r
    dec = decide("gru", c, min_windows=10)
    assert f"{n} windows at every origin, 12 a horizon apart; HAC lag 47" in dec.reason
    assert dec.metrics["baseline_paths"] == 12 and dec.metrics["baseline_windows"] == n
    # the window count is the paths': 5 days of half-hourly windows are too few at min_decision_paths 10
    few = decide("gru", Comparison("naive", 1.0 + d[:200], np.ones(200), horizon=h), min_windows=10)
    assert not few.promote and "5 test windows (one per horizon" in few.reason


def test_a_first_champion_needs_less_evidence_than_a_replacement():
    """p between the two levels: promoted when there is no champion, not when it would replace one."""
    rng = np.random.default_rng(11)
    base, noise = 1.0 + 0.3 * rng.standard_normal(40), 0.3 * rng.standard_normal(40)
    for gain in np.linspace(0, 0.3, 301):  # the smallest gain whose evidence lies between the two levels
        bar = Comparison("naive", base - gain + noise, base, margin=0.0)
        if 0.05 < bar.test().p_value < 0.10:
            break
    assert 0.05 < bar.test().p_value < 0.10
    cand = bar.candidate
    first = decide("gru", bar, significance=0.05, first_significance=0.10)
    assert first.promote and first.metrics["first_significance"] == 0.1
    strict = decide("gru", bar, significance=0.05, first_significance=0.05)
    assert not strict.promote and "needs p < 0.05, evaluate.first_significance, no champion yet" in strict.reason
    # against a champion the bar and the champion are held to `significance`
    champ = Comparison("champion v1", cand, base)
    d = decide("gru", bar, champ, significance=0.05, first_significance=0.10, champion_version=1)
    assert not d.promote and "needs p < 0.05, evaluate.significance" in d.reason


def _bench():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "promotion_power.py"
    spec = importlib.util.spec_from_file_location("promotion_power", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["promotion_power"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_size_and_power_on_synthetic_half_hourly_losses():
    """bench/promotion_power.py's taylor-like scenario, fixed seed, 200 trials each: a candidate equal to the bar is
    promoted at about the test's level; one 20% better is promoted more often by every-origin windows than by the
    windows a horizon apart alone."""
    bench = _bench()
    sc = bench.SCENARIOS[0]
    null = bench.run(sc, [0.0], 200, [0.0], [0.05], seed=7, bootstrap=False)
    size = {r["test"]: r["promoted"] for r in null}
    # 200 trials: the rate's standard error is 1.5 points; the bench's 600-trial runs put both tests near 6-7%
    assert size["every_origin"] <= 0.10 and size["every_origin"] <= size["today"] + 0.02, size
    alt = bench.run(sc, [0.2], 200, [0.02], [0.05], seed=7, bootstrap=False)
    power = {r["test"]: r["promoted"] for r in alt}
    assert power["every_origin"] > power["today"] + 0.03, power


def test_a_panels_paths_are_counted_within_each_series_and_summed():
    """Four series' 25 test windows of a year ahead, pooled: 3 paths a horizon apart in each, 12 in all; counted over
    the 100 windows together they would be 9, each series' last partial path lost at the next one's start."""
    rng = np.random.default_rng(0)
    cand, base = rng.gamma(2.0, 1.0, 100), rng.gamma(2.0, 1.2, 100)
    pooled = Comparison("naive", cand, base, horizon=12)
    panel = Comparison("naive", cand, base, horizon=12, independent=12)
    assert (pooled.paths, panel.paths) == (9, 12)
    t_pooled, t_panel = pooled.test(), panel.test()
    assert (t_pooled.dof, t_panel.dof) == (8, 11) and t_panel.statistic == t_pooled.statistic
    dec = decide("m", panel, None, min_windows=10)
    assert dec.metrics["baseline_paths"] == 12 and "100 windows at every origin, 12 a horizon apart" in dec.reason
    dec = decide("m", pooled, None, min_windows=10)
    assert "9 test windows (one per horizon, none overlapping) are too few for a decision" in dec.reason
