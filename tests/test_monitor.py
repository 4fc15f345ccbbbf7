"""The monitor's arithmetic on small synthetic data: PSI and the training split's own variability, scoring
earlier forecasts on the actuals that arrived, the verdict and its cooldown, the monitor section of params.yaml."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from cellcast.pipeline.config import MonitorConfig, Params, load_params
from cellcast.pipeline.data import drift as D
from cellcast.pipeline.errors import ConfigError
from cellcast.pipeline.monitoring import scoring, verdict

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)


# ---------------------------------------------------------------- drift


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    train = rng.normal(10, 2, 5000)
    prof = D.bin_profile(train, 10)
    assert len(prof["cuts"]) == 9 and abs(sum(prof["shares"]) - 1) < 1e-9
    same = D.psi(prof["shares"], D.shares(rng.normal(10, 2, 1000), prof["cuts"]))
    shifted = D.psi(prof["shares"], D.shares(rng.normal(12, 2, 1000), prof["cuts"]))
    assert same < 0.05 < 0.25 < shifted


def test_a_flag_variable_gets_as_many_bins_as_it_has_values():
    train = np.array([0.0] * 300 + [1.0] * 700)
    prof = D.bin_profile(train, 10)
    assert prof["cuts"] == [0.0, 1.0] and prof["shares"] == pytest.approx([0.0, 0.3, 0.7])
    assert D.psi(prof["shares"], D.shares(train[::7], prof["cuts"])) < 0.01
    assert D.psi(prof["shares"], D.shares(np.ones(50), prof["cuts"])) > 1  # the zeros are gone


def test_outside_share_counts_values_beyond_the_bounds_and_ignores_missing_ones():
    assert D.outside_share([1, 2, 3, 50, np.nan], (0, 10)) == 0.25
    assert np.isnan(D.outside_share([np.nan], (0, 10)))


def _seasonal(n, level=0.0, seed=0):
    t = np.arange(n)
    return 10 + level + 3 * np.sin(2 * np.pi * t / 365) + np.random.default_rng(seed).normal(0, 0.3, n)


def test_a_seasonal_series_strays_from_itself_beyond_the_rule_of_thumb_and_that_is_its_normal():
    """100 days of a yearly cycle differ from three years of it by far more than 0.25: the training split's
    own windows say so, and a recent window of the same process stays within that; a level shift does not."""
    n, rows = 3 * 365, 100
    y = _seasonal(n + 400)
    train = pd.DataFrame({"timestamp": pd.date_range("2020-01-01", periods=n, freq="D"), "y": y[:n]})
    ref = D.reference_profile(train, ["y"], ["y"], bins=10, tolerance=1.0, window=rows)
    normal = ref["variables"]["y"]["psi_normal"]
    assert normal > 0.25
    recent = pd.DataFrame({"y": y[n + 200 : n + 300]})
    d = D.drift(recent, ref)["y"]
    assert d["psi"] > 0.25 and d["psi"] <= normal and d["psi_normal"] == normal
    shifted = pd.DataFrame({"y": y[n + 200 : n + 300] + 6})
    assert D.drift(shifted, ref)["y"]["psi"] > normal
    # the calibration holds for windows of its own length only
    assert D.drift(recent.iloc[:50], ref)["y"]["psi_normal"] is None
    th = verdict.thresholds(MonitorConfig(), horizon=7, lookback=28)
    assert not verdict.judge(_acc(0), D.drift(recent, ref), 0.3, th, {}, NOW).breaches
    # 100 rows of a 365-row cycle already reach PSI 5.7 among themselves: 1.5x that is beyond what 10 bins can
    # show (about 8.3), so the levels leave such a shift to the accuracy rule; one that leaves the trained
    # bounds is still drift
    assert verdict.psi_limit(th, D.drift(shifted, ref)["y"]) > 8
    far = pd.DataFrame({"y": y[n + 200 : n + 300] + 13})
    assert "outside the trained bounds" in verdict.judge(_acc(0), D.drift(far, ref), 0.3, th, {}, NOW).reason


def _hourly(n, seed=0):
    """A daily cycle on a yearly one, with noise: hourly rows."""
    t = np.arange(n)
    return (
        10
        + 3 * np.sin(2 * np.pi * t / 24)
        + 2 * np.sin(2 * np.pi * t / (24 * 365))
        + np.random.default_rng(seed).normal(0, 0.3, n)
    )


ROWS, NTR = 168, int(0.7 * 24 * 365)  # a week compared; trained on the first 70% of a year


def _hourly_reference(y):
    train = pd.DataFrame({"timestamp": pd.date_range("2020-01-01", periods=NTR, freq="h"), "y": y[:NTR]})
    return D.reference_profile(train, ["y"], ["y"], bins=10, tolerance=1.0, window=ROWS, season=24)


def _drift_at(y, ref, end):
    """The monitor's drift on the week ending at row `end` (the day before it feeds the differences)."""
    return D.drift(
        pd.DataFrame({"y": y[end - ROWS : end]}), ref, before=pd.DataFrame({"y": y[end - ROWS - 24 : end - ROWS]})
    )


def test_every_window_psi_matches_the_psi_of_each_window_counted_alone():
    y = _hourly(3000)
    y[100:130] = np.nan  # a gap: windows with under half their values observed are skipped
    prof = D.bin_profile(y, 10)
    got = D.window_psis(y, prof, ROWS)
    want = [
        D.psi(prof["shares"], D.shares(y[i : i + ROWS], prof["cuts"]))
        for i in range(len(y) - ROWS + 1)
        if np.isfinite(y[i : i + ROWS]).sum() >= ROWS / 2
    ]
    assert got == pytest.approx(want) and len(got) == len(y) - ROWS + 1
    assert D.seasonal_residuals([1.0, 2, 4, 8], 2)[2:].tolist() == [3.0, 6.0]


def test_an_unchanged_seasonal_series_never_breaches_the_calibrated_limits_where_the_old_rule_fired():
    """Trained on January-September of a daily-and-yearly cycle; every week of the rest of the year (the part
    of the yearly cycle the training split never saw) stays within the calibrated limits. The older rule
    (the max of non-overlapping training windows, no margin) fires on many of them."""
    y = _hourly(24 * 365)
    ref = _hourly_reference(y)
    v = ref["variables"]["y"]
    assert v["psi_windows"] >= v["psi_normal"] > 0.25 and v["residual"]["psi_windows"] > 0
    assert ref["season"] == 24
    th = verdict.thresholds(MonitorConfig(), horizon=24, lookback=ROWS)
    new = old = 0
    for end in range(NTR + 1, len(y) + 1, 12):
        d = _drift_at(y, ref, end)
        assert np.isfinite(d["y"]["residual_psi"]) and d["y"]["n"] == ROWS
        new += bool(verdict.judge(_acc(0), d, 0.3, th, {}, NOW).breaches)
        older = {k: {**x, "psi_windows": None, "residual_windows": None} for k, x in d.items()}
        old += bool(verdict.judge(_acc(0), older, 0.3, th, {}, NOW).breaches)
    assert new == 0 and old > 10, (new, old)


def test_a_planted_level_shift_breaches_the_levels_and_a_variance_change_the_seasonal_differences():
    y = _hourly(24 * 365)
    ref = _hourly_reference(y)
    th = verdict.thresholds(MonitorConfig(outside_share=None), horizon=24, lookback=ROWS)
    end = NTR + 24 * 30
    shifted = y.copy()
    shifted[end - ROWS :] += 8  # past the top of the trained range (3.5 standard deviations of the training rows)
    v = verdict.judge(_acc(0), _drift_at(shifted, ref, end), 0.3, th, {}, NOW)
    assert v.retrain and v.reason.startswith("drift: y PSI") and "1.5x the highest of the training split" in v.reason
    noisy = y.copy()
    noisy[end - ROWS - 24 :] += np.random.default_rng(1).normal(0, 0.6, len(y) - end + ROWS + 24)
    d = _drift_at(noisy, ref, end)["y"]
    v = verdict.judge(_acc(0), {"y": d}, 0.3, th, {}, NOW)
    assert d["psi"] <= verdict.psi_limit(th, d), d  # the levels alone do not show it
    assert v.retrain and v.reason.startswith("drift: y seasonal differences PSI"), v.reason


def test_a_model_with_an_older_profile_is_judged_as_before_and_says_so():
    """ONNX metadata written before the calibrated fields: `psi_normal` alone, no margin, no residuals."""
    th = verdict.thresholds(MonitorConfig(), 7, 28)
    d = {"n": 100, "psi": 2.6, "psi_normal": 2.5, "outside": 0.0, "bounds": [0, 10]}
    assert verdict.psi_limit(th, d) == 2.5 and verdict.residual_limit(th, d) is None
    v = verdict.judge(_acc(0), {"load": d}, 0.3, th, {}, NOW)
    assert v.retrain and "the model's older profile" in v.reason and "a retrained model records" in v.reason
    assert verdict.psi_limit(th, {**d, "psi_windows": 2.0}) == pytest.approx(3.0)


def test_the_reference_records_the_training_rows_scale_and_bounds():
    train = pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=5, freq="h"),
            "load": [1.0, 3.0, 2.0, 2.0, 6.0],
            "temp": [5.0, 5.0, 6.0, 7.0, 9.0],
        }
    )
    ref = D.reference_profile(train, ["load", "temp"], ["load"], bins=4, tolerance=0.5)
    assert ref["mase_scale"] == {"load": pytest.approx((2 + 1 + 0 + 4) / 4)}
    assert ref["bounds"]["temp"] == pytest.approx([5 - 2, 9 + 2])
    assert ref["train"] == ["2024-01-01 00:00:00", "2024-01-01 04:00:00"] and ref["rows"] == 5


# ---------------------------------------------------------------- accuracy


def _actuals(n=60, season=24, freq="h"):
    t = np.arange(n)
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=n, freq=freq),
            "load": 100 + 10 * np.sin(2 * np.pi * t / season),
        }
    )


def _forecast(actuals, origin_row, horizon, offset=0.0, version=1, quantiles=False):
    ts = actuals["timestamp"]
    stamps = pd.date_range(ts.iloc[origin_row], periods=horizon + 1, freq="h")[1:]
    truth = actuals.set_index("timestamp")["load"].reindex(stamps).to_numpy()
    fc = pd.DataFrame(
        {
            "timestamp": stamps,
            "load": np.where(np.isfinite(truth), truth, 100.0) + offset,
            "model_name": "x-forecaster",
            "model_version": str(version),
        }
    )
    if quantiles:
        fc["load_q0.1"], fc["load_q0.5"], fc["load_q0.9"] = fc["load"] - 1, fc["load"], fc["load"] + 1
    return fc


def test_points_are_scored_where_actuals_arrived_with_the_seasonal_naive_of_the_same_origin():
    a = _actuals(60)
    fcs = [
        ("b.parquet", _forecast(a, 49, 24, offset=2.0)),  # steps 50..73: 10 arrived
        ("a.parquet", _forecast(a, 40, 5, offset=-1.0)),
    ]  # steps 41..45: all arrived
    p = scoring.score_points(fcs, a, ["load"], season=24)
    assert len(p) == 15 and set(p["forecast_file"]) == {"a.parquet", "b.parquet"}
    first = p[p["forecast_file"] == "b.parquet"].iloc[0]
    assert first["timestamp"] == a["timestamp"][50] and first["step"] == 1
    assert first["naive"] == a["load"][50 - 24]  # one season back from the forecast step, observed then
    late = p[(p["forecast_file"] == "a.parquet") & (p["step"] == 5)].iloc[0]
    assert late["naive"] == a["load"][45 - 24]
    acc = scoring.accuracy(p, {"load": 2.0}, ["load"])
    assert acc["points"] == 15 and acc["forecasts"] == 2
    assert acc["mase"] == pytest.approx((10 * 2.0 + 5 * 1.0) / 15 / 2.0)
    assert acc["bias.load"] == pytest.approx((10 * 2.0 - 5 * 1.0) / 15)  # forecast - actual
    assert acc["naive_mase"] > 0 and acc["relative_mase"] == pytest.approx(acc["mase"] / acc["naive_mase"])
    assert np.isnan(acc["coverage"])  # no quantile columns
    # the window: only points at or after `since` count
    assert len(scoring.score_points(fcs, a, ["load"], 24, since=a["timestamp"][55])) == 5


def test_interval_coverage_uses_the_outermost_quantiles_around_the_median():
    a = _actuals(60)
    fc = _forecast(a, 40, 10, offset=0.5, quantiles=True)
    fc.loc[fc.index[:4], "load"] += 5  # shifts the point forecast only
    fc.loc[fc.index[:4], ["load_q0.1", "load_q0.9"]] += 5  # ... and its interval: 4 misses
    assert scoring.quantile_columns(fc, "load") == ("load_q0.1", "load_q0.9", pytest.approx(0.8))
    acc = scoring.accuracy(scoring.score_points([("f", fc)], a, ["load"], 24), {"load": 1.0}, ["load"])
    assert acc["coverage"] == pytest.approx(0.6) and acc["coverage_nominal"] == pytest.approx(0.8)


def test_a_filled_actual_is_no_observation():
    a = _actuals(60)
    a["filled:load"] = False
    a.loc[45, "filled:load"] = True
    assert len(scoring.score_points([("f", _forecast(a, 40, 10))], a, ["load"], 24)) == 9


def test_forecast_files_newest_first_one_per_origin_of_the_champion_only(tmp_path):
    a = _actuals(60)

    def write(name, fc):
        return fc.to_parquet(tmp_path / name, index=False)

    write("20250101T000000Z.parquet", _forecast(a, 10, 5))  # before the window: stops the scan
    write("20250101T010000Z.parquet", _forecast(a, 40, 5, offset=9))  # same origin, older: superseded
    write("20250101T020000Z.parquet", _forecast(a, 40, 5, offset=1))
    write("20250101T030000Z.parquet", _forecast(a, 45, 5, version=2))  # another version
    got = scoring.read_forecasts(tmp_path, version=1, since=a["timestamp"][30])
    assert [n for n, _ in got] == ["20250101T020000Z.parquet"]


# ---------------------------------------------------------------- verdict


def _acc(points, mase=1.0):
    return {"points": points, "mase": mase}


def test_accuracy_triggers_past_the_ratio_once_enough_points_arrived():
    th = verdict.thresholds(MonitorConfig(mase_ratio=1.5), horizon=7, lookback=28)
    assert (th.min_points, th.window, th.drift_rows) == (7, 14, 100)
    assert not verdict.judge(_acc(6, 1.0), {}, 0.5, th, {}, NOW).retrain  # 2x, but 6 points < 7
    v = verdict.judge(_acc(7, 1.0), {}, 0.5, th, {}, NOW)
    assert v.retrain and "2.00x the champion's test MASE 0.500" in v.reason
    assert not verdict.judge(_acc(50, 0.7), {}, 0.5, th, {}, NOW).retrain  # 1.4x
    assert not verdict.judge(_acc(50, 9.0), {}, None, th, {}, NOW).retrain  # no test MASE recorded
    off = verdict.thresholds(MonitorConfig(mase_ratio=None), 7, 28)
    assert not verdict.judge(_acc(50, 9.0), {}, 0.5, off, {}, NOW).retrain


def test_values_outside_the_trained_bounds_trigger():
    th = verdict.thresholds(MonitorConfig(outside_share=0.02), 7, 28)
    d = {"load": {"n": 100, "psi": 0.1, "psi_normal": None, "outside": 0.05, "bounds": [0, 10]}}
    v = verdict.judge(_acc(0), d, 0.5, th, {}, NOW)
    assert v.retrain and "5.0% of the last 100 load values lie outside the trained bounds [0, 10]" in v.reason


def test_the_cooldown_holds_a_second_trigger_back_and_then_lets_it_through():
    th = verdict.thresholds(MonitorConfig(cooldown_hours=24), 7, 28)
    recent = {"last_trigger": {"at": verdict._iso(NOW - timedelta(hours=1))}}
    v = verdict.judge(_acc(20, 2.0), {}, 0.5, th, recent, NOW)
    assert not v.retrain and v.breaches and v.reason.startswith("cooldown until 2025-03-02T11:00:00Z")
    old = {"last_trigger": {"at": verdict._iso(NOW - timedelta(hours=25))}}
    assert verdict.judge(_acc(20, 2.0), {}, 0.5, th, old, NOW).retrain


def test_a_retrain_whose_run_crashed_holds_no_cooldown_and_status_says_so(settings_for):
    """A retrain killed before it finished (worker or stack stopped) never had its say: the next evaluation
    that still finds the breach starts another, instead of waiting out the cooldown."""
    from cellcast.pipeline.monitoring import state as monitor
    from cellcast.pipeline.monitoring.report import MonitorReport
    from cellcast.pipeline.monitoring.status import _trigger_lines

    th = verdict.thresholds(MonitorConfig(cooldown_hours=24), 7, 28)
    s = settings_for("load")
    v = verdict.Verdict(True, ["drift: temp"], "drift: temp")
    report = MonitorReport(
        "load", "load-forecaster", 1, 3, "", "", "", {}, None, None, 24, {}, "the model's metadata", {}, v
    )
    at = NOW - timedelta(hours=1)
    monitor.record_trigger(s, report, {"flow_run_id": "r1", "flow_run_name": "a-run"}, now=at, log_to_mlflow=False)
    assert monitor.unchecked_trigger(s) == "r1"
    assert not verdict.judge(_acc(20, 2.0), {}, 0.5, th, monitor.read_state(s), NOW).retrain
    assert monitor.record_trigger_crashed(s, "another run", "killed") is None  # not the last trigger's run
    assert monitor.record_trigger_crashed(s, "r1", "Process exited with status code: -15.", now=NOW)
    state = monitor.read_state(s)
    assert monitor.unchecked_trigger(s) is None and state["triggers"][-1]["crashed"]["at"] == verdict._iso(NOW)
    assert verdict.judge(_acc(20, 2.0), {}, 0.5, th, state, NOW).retrain
    assert "cooldown: none: the retrain's run crashed (Process exited with status code: -15.)" in "\n".join(
        _trigger_lines(state, 24, NOW)
    )


# ---------------------------------------------------------------- params.yaml


def test_the_monitor_section_is_typed_overridable_per_dataset_and_shapes_no_model(tmp_path):
    p = Params(monitor={"mase_ratio": 2.0}, datasets={"a": {"monitor": {"psi": None, "window": 48}}})
    assert p.for_dataset("a").monitor.psi is None and p.for_dataset("a").monitor.window == 48
    assert p.for_dataset("b").monitor.psi == 0.25 and p.for_dataset("b").monitor.mase_ratio == 2.0
    assert p.for_dataset("a").fingerprint() == Params().for_dataset("a").fingerprint()
    assert load_params().for_dataset("elecdemand").monitor == MonitorConfig()  # the file states the defaults
    for text, needle in [
        ("monitor:\n  cooldown_hour: 3\n", "monitor.cooldown_hour: Extra inputs"),
        ("monitor:\n  window: 0\n", "monitor.window"),
        ("monitor:\n  psi: -1\n", "monitor.psi"),
    ]:
        (tmp_path / "params.yaml").write_text(text)
        with pytest.raises(ConfigError, match=needle):
            load_params(tmp_path / "params.yaml")


def test_cellcast_monitor_before_any_monitoring_is_one_line_and_exit_2(project):
    from typer.testing import CliRunner

    from cellcast.cli import app

    res = CliRunner().invoke(app, ["monitor", "elecdemand"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        "error: reports/elecdemand/monitoring/state.json: 'elecdemand' has not been monitored yet; the scheduled "
        "forecast flow (refresh) monitors it after each refresh"
    ]


def test_cellcast_monitor_shows_each_limit_and_says_when_a_model_has_the_older_profile(settings_for):
    from dataclasses import asdict

    from cellcast.pipeline.files import write_json
    from cellcast.pipeline.monitoring.state import state_path
    from cellcast.pipeline.monitoring.status import status

    s = settings_for("elecdemand")
    th = verdict.thresholds(s.monitor, 48, 384)
    drift = {
        "Demand": {
            "n": 384,
            "psi": 3.48,
            "psi_normal": 2.78,
            "psi_windows": 2.79,
            "residual_psi": 0.3,
            "residual_windows": 1.39,
            "outside": 0.0,
            "bounds": [0, 10],
        },
        "WorkDay": {"n": 384, "psi": 0.2, "psi_normal": 0.15, "outside": 0.0, "bounds": [0, 1]},
    }
    v = verdict.judge(_acc(0), drift, 0.3, th, {}, NOW)
    last = {
        "model_name": "elecdemand-forecaster",
        "version": 3,
        "evaluation": 1,
        "at": "2026-12-07T00:00:00Z",
        "data_until": "2014-12-31 23:30:00",
        "window_start": "2014-12-30 00:00:00",
        "accuracy": {**_acc(0), "forecasts": 0},
        "test_mase": 0.3,
        "mase_ratio": None,
        "season": 48,
        "drift": drift,
        "reference": "the model's metadata",
        "thresholds": asdict(th),
        "verdict": asdict(v),
    }
    write_json(state_path(s), {"last": last, "evaluations": 1})
    text = status(s, NOW)
    assert not v.breaches, v.breaches  # 3.48 < 1.5 x 2.79; 0.3 < 1.5 x 1.39; 0.2 < the 0.25 floor
    assert "seasonal diff PSI" in text and "4.185" in text and "2.085" in text
    assert "Demand: PSI limit 1.5x the highest of the training split's windows of as many rows, 2.79" in text
    assert "WorkDay: PSI limit the model's older profile" in text and "a retrained model records" in text


# ---------------------------------------------------------------- panels


def _panel_case(shift_c: float = 0.0):
    """Three hourly series in their own units (A ~ 10, B ~ 1000, C ~ 50), a panel champion that knows their scales,
    and two forecasts of 6 steps each: close on A and B, 3 series-scales off on C; C's recent level shifted by
    `shift_c` of its scales."""
    from cellcast.pipeline.data import drift as drifts
    from cellcast.pipeline.monitoring.champion import Champion

    n, rng = 240, np.random.default_rng(0)
    t = pd.date_range("2025-01-01", periods=n, freq="h")
    levels = {"A": (10.0, 0.5), "B": (1000.0, 40.0), "C": (50.0, 2.0)}
    parts, scaled, known, fcs = [], [], {}, []
    for sid, (mu, amp) in levels.items():
        y = mu + amp * np.sin(2 * np.pi * np.arange(n) / 24) + rng.normal(0, amp / 10, n)
        scale = float(np.abs(np.diff(y[:150])).mean())
        if sid == "C":
            y[-60:] += shift_c * scale
        parts.append(pd.DataFrame({"series_id": sid, "timestamp": t, "y": y}))
        scaled.append(pd.DataFrame({"timestamp": t[:150], "y": (y[:150] - mu) / scale}))
        known[sid] = {"mean": [mu], "scale": [scale], "status": "ok"}
        off = 3.0 * scale if sid == "C" else 0.05 * scale
        for first in (n - 12, n - 6):
            fcs.append(
                pd.DataFrame(
                    {"series_id": sid, "timestamp": t[first : first + 6], "y": y[first : first + 6] + off}
                ).assign(model_version="1")
            )
    frame = pd.concat(parts, ignore_index=True)
    ref = drifts.reference_profile(
        pd.concat(scaled).sort_values("timestamp"), ["y"], ["y"], 10, 1.0, {"y": 1.0}, window=100
    )
    champ = Champion(1, ["y"], ["y"], 24, 6, 0.5, 24, ref, "test", {}, panel={"series": known})
    forecasts = [("f.parquet", pd.concat(fcs, ignore_index=True).sort_values("timestamp"))]
    return frame, champ, forecasts


def test_a_panel_is_scored_per_series_on_its_own_scale_and_retrains_on_the_share_past_a_threshold():
    from cellcast.pipeline.monitoring import panel

    frame, champ, forecasts = _panel_case()
    th = verdict.thresholds(MonitorConfig(), horizon=6, lookback=24)
    table, points, per_series = panel.series_figures(frame, forecasts, champ, th, NOW)
    rows = table.set_index("series_id")
    # each series' MASE on its own scale: A and B off by 0.05 of theirs, C by 3 of its own
    assert rows.loc["A", "mase"] == pytest.approx(0.05, rel=1e-6) and rows.loc["B", "mase"] == pytest.approx(0.05)
    assert rows.loc["C", "mase"] == pytest.approx(3.0) and rows.loc["C", "ratio"] == pytest.approx(6.0)
    assert list(table["series_id"])[0] == "C" and list(rows["past"]) == [True, False, False]
    assert "accuracy: rolling MASE 3.000 on 12 points" in rows.loc["C", "breaches"]
    # pooled over every point in the series' units: the mean of the three
    acc = panel.pooled_accuracy(points, ["y"])
    assert acc["points"] == 36 and acc["mase"] == pytest.approx((0.05 + 0.05 + 3.0) / 3)
    # one of three past: a retrain above a share of 0.2, none above 0.5 (the breach still listed)
    v = panel.panel_verdict(table, 0.2, th, {}, NOW)
    assert v.retrain and v.breaches[0].startswith("panel: 1 of 3 series (33%) past a threshold")
    assert v.breaches[1].startswith("series 'C': accuracy")
    v = panel.panel_verdict(table, 0.5, th, {}, NOW)
    assert not v.retrain and v.reason.endswith(": no retrain") and len(v.breaches) == 2
    recent = {"last_trigger": {"at": verdict._iso(NOW - timedelta(hours=1))}}
    v = panel.panel_verdict(table, 0.2, th, recent, NOW)
    assert not v.retrain and v.reason.startswith("cooldown until")
    # what `cellcast monitor NAME` shows: the share and the worst series first
    summary = panel.panel_summary(table)
    text = "\n".join(panel.status_lines(summary, 0.2))
    assert "3 series, 3 judged, 1 past a threshold (33%; retrain above 20%)" in text
    assert text.index("  C: MASE 3.000 on 12 points, ratio 6.00x") < text.index("  A: ")
    # judged against each series' own test MASE where the champion's run kept them: C was always that hard
    champ.series_test_mase = {"A": 0.05, "B": 0.05, "C": 2.5}
    table, _, _ = panel.series_figures(frame, forecasts, champ, th, NOW)
    rows = table.set_index("series_id")
    assert rows.loc["C", "test_mase"] == 2.5 and rows.loc["C", "ratio"] == pytest.approx(1.2)
    assert not rows["past"].any()


def test_a_panel_series_whose_level_moved_drifts_in_its_own_units_and_the_worst_is_named():
    from cellcast.pipeline.monitoring import panel

    frame, champ, forecasts = _panel_case(shift_c=40.0)
    th = verdict.thresholds(MonitorConfig(mase_ratio=None), horizon=6, lookback=24)
    table, _, per_series = panel.series_figures(frame, forecasts, champ, th, NOW)
    rows = table.set_index("series_id")
    # B's level is 100 times A's, but each is compared in its own units: neither drifts; C moved, and does
    assert rows.loc["C", "past"] and "drift: y PSI" in rows.loc["C", "breaches"]
    assert not rows.loc["A", "past"] and not rows.loc["B", "past"]
    worst = panel.worst_drift(per_series)
    assert worst["y"]["series"] == "C" and worst["y"]["psi"] == pytest.approx(per_series["C"]["y"]["psi"])
