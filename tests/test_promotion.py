"""The promotion policy: pure, no MLflow."""
import math

import pytest

from cellcast.pipeline.registry.promotion import Decision, decide


def test_promotes_when_beating_baseline_by_margin_and_no_champion():
    d = decide(0.281, 0.310, "seasonal_naive_336", margin=0.02, candidate_name="lstm")
    assert isinstance(d, Decision) and d.promote
    assert "lstm MASE 0.281 beats seasonal_naive_336 0.31 by 9.4% (margin 2%)" in d.reason
    assert "no champion yet" in d.reason
    assert d.metrics["candidate_mase"] == 0.281 and d.metrics["baseline_mase"] == 0.310
    assert d.metrics["baseline_name"] == "seasonal_naive_336" and d.metrics["champion_mase"] is None


def test_promotes_when_also_beating_champion():
    d = decide(0.281, 0.310, "seasonal_naive_336", 0.02, champion=0.295, candidate_name="lstm", champion_version=3)
    assert d.promote
    assert d.reason == "lstm MASE 0.281 beats seasonal_naive_336 0.31 by 9.4% (margin 2%) and champion v3 0.295"
    assert d.metrics["champion_mase"] == 0.295 and d.metrics["champion_version"] == 3


def test_beating_baseline_within_margin_is_not_enough():
    # 1% better than the baseline, margin 2%: rejected, and the reason says by how little
    d = decide(0.99, 1.0, "naive", 0.02)
    assert not d.promote
    assert "by only 1.0%" in d.reason and "margin 2%" in d.reason


def test_exactly_at_margin_promotes():
    assert decide(0.98, 1.0, "naive", 0.02).promote


def test_no_candidate_beats_baseline_says_no_champion():
    d = decide(1.2, 1.0, "naive", 0.02, candidate_name="gru")
    assert not d.promote
    assert d.reason == "gru MASE 1.2 does not beat naive 1: no champion"


def test_not_beating_champion_keeps_champion():
    d = decide(0.30, 0.40, "naive", 0.02, champion=0.29, champion_version=2)
    assert not d.promote
    assert "but not champion v2 0.29: champion unchanged" in d.reason
    # a tie does not replace the champion either
    assert not decide(0.29, 0.40, "naive", 0.02, champion=0.29).promote


def test_parity_failure_blocks_even_a_better_model():
    d = decide(0.1, 1.0, "naive", 0.02, parity_ok=False)
    assert not d.promote and "parity" in d.reason


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_candidate_is_rejected(bad):
    assert not decide(bad, 1.0, "naive", 0.02).promote


def test_metric_name_is_used_in_reason_and_keys():
    d = decide(5.0, 10.0, "naive", 0.1, metric="rmse")
    assert d.promote and "RMSE 5 beats naive 10 by 50.0%" in d.reason
    assert d.metrics["candidate_rmse"] == 5.0 and d.metrics["baseline_rmse"] == 10.0
