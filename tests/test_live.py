"""The live monitor on live forecast logs made from known numbers: reading the log (several files, duplicates, a
damaged file, rows without timestamps), scoring per version and role, pairing the champion's and the challenger's
paths in shadow and under a canary, and the live promotion rule."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from livelog import live_rows, write_live

from cellcast.pipeline.monitoring import live
from cellcast.pipeline.monitoring.promote import weigh
from cellcast.pipeline.registry import promotion

H = 4


def _actuals(n=400, series: list[str] | None = None):
    t = np.arange(n)
    frames = []
    for k, sid in enumerate(series or [""]):
        frames.append(
            pd.DataFrame(
                {
                    "id": sid,
                    "timestamp": pd.date_range("2024-01-01", periods=n, freq="h"),
                    "load": 100 + 10 * np.sin(2 * np.pi * t / 24) + k + np.arange(n) % 3,  # one-step MAE 1 + ...
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _noise(sd, seed):
    rng = np.random.default_rng(seed)
    table = rng.normal(0, sd, size=(1000, H + 1))
    return lambda i, s: table[i, s]


def _origins(a, first, n, every=1):
    return list(a["timestamp"].iloc[first : first + n * every : every])


def _log(tmp_path, *frames) -> live.LiveLog:
    write_live(tmp_path / "live", *frames)
    return live.read_live(tmp_path / "live")


def test_a_log_of_several_files_is_read_with_duplicates_a_damaged_file_and_untimed_rows_counted(tmp_path):
    a = _actuals()
    rows = live_rows(a, _origins(a, 300, 10), H, "1", "champion", 1.0)
    untimed = rows.iloc[:H].assign(request_id="r-untimed", timestamp=pd.NaT, origin=pd.NaT)
    folder = tmp_path / "live"
    write_live(folder, rows.iloc[:20], rows.iloc[20:], rows.iloc[:8], untimed)  # the first two requests twice
    (folder / "20261207T000009000000Z-4242-9.parquet").write_bytes(b"PAR1 not a parquet file")
    (folder / ".20261207T000010000000Z-4242-10.parquet.tmp").write_bytes(b"being written")
    rows.iloc[:H].assign(step="one").to_parquet(folder / "20261207T000011000000Z-4242-11.parquet")
    got = live.read_live(folder)
    assert got.files == 6 and [d.split(":")[0] for d in got.damaged] == [
        "20261207T000009000000Z-4242-9.parquet",
        "20261207T000011000000Z-4242-11.parquet",
    ]
    assert got.duplicates == 8 and got.untimed == H and len(got.rows) == 40
    assert got.rows["id"].eq("").all() and got.rows["timestamp"].dtype.kind == "M"
    # a writer that stamps its times in UTC: the data's clock, aligned all the same
    aware = rows.assign(origin=rows["origin"].dt.tz_localize("UTC"), timestamp=rows["timestamp"].dt.tz_localize("UTC"))
    scored = live.score_live(_log(tmp_path / "aware", aware).rows, a, ["load"])
    assert len(scored) == len(rows) and (scored["forecast"] - scored["actual"]).eq(1.0).all()


def test_live_forecasts_are_scored_per_version_and_role_on_the_actuals_that_arrived(tmp_path):
    a = _actuals(400)
    champ = live_rows(a, _origins(a, 380, 30), H, "1", "champion", 2.0, quantile_halfwidth=1.5)  # 90% misses all
    chall = live_rows(a, _origins(a, 380, 30), H, "2", "challenger", 0.5, quantile_halfwidth=1.0, served=False)
    got = _log(tmp_path, champ, chall)
    targets = live.target_columns(got.rows)
    assert targets == ["load"]
    points = live.score_live(got.rows, a, targets)
    # origins 380..409: the steps up to row 399 arrived
    per_version = points.groupby("model_version").size().to_dict()
    arrived = sum(max(0, min(H, 399 - o)) for o in range(380, 410))
    assert per_version == {"1": arrived, "2": arrived}
    table = live.summary(points, {"load": 2.0}, since=a["timestamp"].iloc[396])
    assert [(r["version"], r["role"]) for r in table] == [("1", "champion"), ("2", "challenger")]
    c, d = table
    assert c["forecasts"] == d["forecasts"] == 19  # origins 380..398 (rows 381..399 arrived)
    assert c["mase"] == pytest.approx(1.0) and d["mase"] == pytest.approx(0.25)
    assert c["coverage"] == {"90": 0.0} and d["coverage"] == {"90": 1.0}
    assert c["rolling_points"] == 4 * H  # rows 396..399, each forecast from the H origins before it


def test_a_filled_or_missing_actual_is_not_scored_and_panels_align_by_series():
    a = _actuals(100, series=["a/x", "b/y"])
    a["filled:load"] = False
    a.loc[(a["id"] == "a/x") & (a["timestamp"] == a["timestamp"].iloc[51]), "filled:load"] = True
    a.loc[(a["id"] == "b/y") & (a["timestamp"] == a["timestamp"].iloc[52]), "load"] = np.nan
    rows = pd.concat(
        [
            live_rows(a, _origins(a, 50, 1), H, "1", "champion", 1.0, series="a/x"),
            live_rows(a, _origins(a, 50, 1), H, "1", "champion", 3.0, series="b/y"),
        ]
    )
    points = live.score_live(rows, a, ["load"])
    assert points.groupby("id").size().to_dict() == {"a/x": 3, "b/y": 3}
    err = (points["forecast"] - points["actual"]).groupby(points["id"]).mean()
    assert err.to_dict() == {"a/x": pytest.approx(1.0), "b/y": pytest.approx(3.0)}
    # the scale for a champion that records none: each series' one-step naive MAE before the first origin
    scale = live.data_scale(a, ["load"], a["timestamp"].iloc[50])
    for sid in ("a/x", "b/y"):
        own = a[(a["id"] == sid) & (a["timestamp"] < a["timestamp"].iloc[50])]["load"].diff().abs().mean()
        assert scale[(sid, "load")] == pytest.approx(own)
    assert live.data_scale(_actuals(), ["load"], None).keys() == {"load"}  # one series: per target


def _evidence(settings, a, champ, chall, tmp_path, min_forecasts=30):
    s = settings.model_copy(
        update={"monitor": settings.monitor.model_copy(update={"live_min_forecasts": min_forecasts})}
    )
    logged = _log(tmp_path, champ, chall)
    return weigh(logged, a, ["load"], "1", "2", {"load": 1.0}, s)


def test_a_better_challenger_in_shadow_is_promoted_and_the_live_window_recorded(settings_for, tmp_path):
    a = _actuals(400)
    origins = _origins(a, 200, 100)
    reqs = [f"req{i}" for i in range(100)]
    champ = live_rows(a, origins, H, "1", "champion", _noise(1.0, 1), requests=reqs)
    chall = live_rows(a, origins, H, "2", "challenger", _noise(0.5, 2), requests=reqs, served=False)
    ev = _evidence(settings_for("x"), a, champ, chall, tmp_path)
    d = ev.decision
    assert d.promote, d.reason
    assert d.metrics["live_paired"] == 100 and d.metrics["live_origins"] == 100
    assert d.metrics["live_first_origin"] == str(origins[0]) and d.metrics["live_last_origin"] == str(origins[-1])
    assert d.metrics["live_overlap"] == H  # origins one step apart: paths share H - 1 targets, as on the test split
    assert d.metrics["champion_hac_lag"] >= H - 1 and d.metrics["champion_p_value"] < 0.05
    assert d.metrics["live_dof"] == promotion.paths(100, H) - 1
    assert "v2 live MASE" in d.reason and "vs champion v1" in d.reason and "100 paired live forecasts" in d.reason
    # the statistic is the training flow's test on the same differentials
    comp, _ = live.comparison(
        live.pair_paths(live.score_live(ev.log.rows, a, ["load"]), "1", "2", {"load": 1.0}), "1", pd.Timedelta("1h")
    )
    assert d.metrics["champion_dm"] == pytest.approx(
        promotion.dm_test(comp.candidate - comp.other, h=H).statistic, 1e-5
    )


def test_a_worse_challenger_is_not_promoted_and_the_refusal_gives_p(settings_for, tmp_path):
    a = _actuals(400)
    origins = _origins(a, 200, 100)
    champ = live_rows(a, origins, H, "1", "champion", _noise(0.5, 1))
    chall = live_rows(a, origins, H, "2", "challenger", _noise(1.0, 2), served=False)
    d = _evidence(settings_for("x"), a, champ, chall, tmp_path).decision
    assert not d.promote
    assert d.reason.startswith("v2 not promoted: v2 live MASE") and "(not better): not significantly better" in d.reason
    assert f"p {d.metrics['champion_p_value']:.3g}" in d.reason and "champion unchanged" in d.reason


def test_too_few_paired_forecasts_refuse_saying_how_many_of_how_many(settings_for, tmp_path):
    a = _actuals(400)
    origins = _origins(a, 200, 12)
    champ = live_rows(a, origins, H, "1", "champion", 1.0)
    chall = live_rows(a, origins, H, "2", "challenger", 0.1, served=False)
    d = _evidence(settings_for("x"), a, champ, chall, tmp_path).decision
    assert not d.promote and "champion_p_value" not in d.metrics
    assert d.reason == (
        "v2 not promoted: 12 paired live forecasts of the 30 needed (monitor.live_min_forecasts; scored: 12 of the "
        "challenger, 12 of the champion)"
    )


def test_a_canary_pairs_the_origins_both_versions_answered_and_none_is_no_evidence(settings_for, tmp_path):
    a = _actuals(500)
    every = 6  # requests six steps apart: paths of four steps never overlap
    champ = live_rows(a, _origins(a, 100, 40, every), H, "1", "champion", _noise(1.0, 1))
    # the challenger answers other requests: 25 of its origins coincide with the champion's
    chall = live_rows(a, _origins(a, 100 + 15 * every, 40, every), H, "2", "challenger", _noise(0.3, 2))
    ev = _evidence(settings_for("x"), a, champ, chall, tmp_path, min_forecasts=20)
    d = ev.decision
    assert d.metrics["live_paired"] == 25 and d.metrics["live_overlap"] == 1, d.metrics
    assert {r["version"]: r["forecasts"] for r in ev.summary} == {"1": 40, "2": 40}
    assert d.promote and d.metrics["live_dof"] == 24, d.reason
    # never the same origin: the scores stand, and there is nothing to compare
    apart = live_rows(a, _origins(a, 103, 40, every), H, "2", "challenger", _noise(0.3, 2))
    ev = _evidence(settings_for("x"), a, champ, apart, tmp_path / "apart", min_forecasts=20)
    assert not ev.decision.promote and ev.decision.reason.startswith(
        "v2 not promoted: 0 paired live forecasts of the 20"
    )
    assert [r["forecasts"] for r in ev.summary] == [40, 40]


def test_a_panel_is_paired_per_series_and_tested_on_one_differential_per_origin(settings_for, tmp_path):
    ids = ["a", "b", "c"]
    a = _actuals(300, series=ids)
    origins = _origins(a, 100, 40)
    frames = []
    for k, sid in enumerate(ids):
        reqs = [f"{sid}{i}" for i in range(40)]
        frames.append(live_rows(a, origins, H, "1", "champion", _noise(1.0, k), requests=reqs, series=sid))
        frames.append(
            live_rows(a, origins, H, "2", "challenger", _noise(0.4, 10 + k), requests=reqs, served=False, series=sid)
        )
    logged = _log(tmp_path, *frames)
    ev = weigh(logged, a, ["load"], "1", "2", {"load": 1.0}, settings_for("x"))
    m = ev.decision.metrics
    assert m["live_paired"] == 120 and m["live_origins"] == 40 and ev.decision.promote, ev.decision.reason
    pairs = live.pair_paths(live.score_live(logged.rows, a, ["load"]), "1", "2", {"load": 1.0})
    per_origin = pairs.groupby("origin")[["challenger", "champion"]].mean()
    d = (per_origin["challenger"] - per_origin["champion"]).to_numpy()
    assert m["champion_dm"] == pytest.approx(promotion.dm_test(d, h=H).statistic, rel=1e-5)


def test_the_roles_are_the_versions_last_logged_under_them(tmp_path):
    a = _actuals(100)
    o = _origins(a, 10, 2)
    old = live_rows(a, o, H, "1", "champion", 1.0, logged_at=pd.Timestamp("2026-12-01", tz="UTC"))
    new = live_rows(a, o, H, "2", "champion", 1.0, logged_at=pd.Timestamp("2026-12-02", tz="UTC"))
    shadow = live_rows(a, o, H, "3", "challenger", 1.0, served=False)
    assert live.roles(_log(tmp_path, new, old, shadow).rows) == {"champion": "2", "challenger": "3"}


def test_the_live_rule_is_off_by_default_and_typed(settings_for):
    from cellcast.pipeline.config import MonitorConfig

    m = settings_for("x").monitor
    assert m.live_promotion is False and m.live_min_forecasts == 30
    with pytest.raises(ValueError):
        MonitorConfig(live_min_forecasts=1)


def test_cellcast_monitor_shows_champion_against_challenger_when_the_live_log_has_rows(settings_for):
    from typer.testing import CliRunner

    from cellcast.cli import app
    from cellcast.pipeline.catalog import live_dir, validated_paths
    from cellcast.pipeline.files import write_json

    s = settings_for("x")
    run = CliRunner()
    assert run.invoke(app, ["monitor", "x"]).exit_code == 2  # no log, never monitored: as before
    a = _actuals(400)
    pq, js = validated_paths(s)
    pq.parent.mkdir(parents=True, exist_ok=True)
    a.drop(columns="id").to_parquet(pq)
    write_json(js, {"name": "x"})
    origins = _origins(a, 300, 40)
    write_live(
        live_dir(s),
        live_rows(a, origins, H, "3", "champion", _noise(1.0, 1), quantile_halfwidth=5.0),
        live_rows(a, origins, H, "4", "challenger", _noise(1.0, 2), quantile_halfwidth=0.1, served=False),
    )
    r = run.invoke(app, ["monitor", "x"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "x: the champion's batch forecasts have not been monitored yet"
    assert lines[1].startswith("live: forecasts/x/live (2 file(s), 320 rows): champion v3 against challenger v4")
    assert lines[2].split() == ["version", "role", "forecasts", "scored", "MASE", "rolling", "MASE", "(8", "steps)"] + [
        "coverage",
        "DM",
        "verdict",
    ]
    champ, chall = lines[3].split(), lines[4].split()
    assert champ[:3] == ["v3", "champion", "40"] and champ[-1] == "-"
    assert chall[:3] == ["v4", "challenger", "40"] and "not better: DM " in lines[4]
    assert "in 90%" in lines[3] and "100.0% in 90%" in lines[3]  # wide intervals cover; narrow ones do not
    assert (
        "live promotion (monitor.live_promotion off; `cellcast promote x --live` applies it now): v4 not promoted"
        in (r.output)
    )


def test_a_panel_is_scored_each_series_on_its_own_scale_so_the_largest_does_not_decide(settings_for, tmp_path):
    # two series 1000x apart: the champion is off by about 3 naive MAEs on the small one and 1 on the large one, the
    # challenger by 1 and 1.5; in each series' own units the challenger is better (1.25 against 2 on average)
    small = _actuals(400, series=["small"])
    a = pd.concat([small, small.assign(id="big", load=small["load"] * 1000)], ignore_index=True)
    origins = _origins(small, 200, 100)
    scale = live.data_scale(a, ["load"], origins[0])
    assert scale[("big", "load")] == pytest.approx(1000 * scale[("small", "load")])
    frames = []
    for k, (sid, champion_off, challenger_off) in enumerate([("small", 3.0, 1.0), ("big", 1.0, 1.5)]):
        mae, reqs = scale[(sid, "load")], [f"{sid}{i}" for i in range(100)]
        frames.append(
            live_rows(a, origins, H, "1", "champion", _noise(champion_off * mae, k), requests=reqs, series=sid)
        )
        frames.append(
            live_rows(
                a,
                origins,
                H,
                "2",
                "challenger",
                _noise(challenger_off * mae, 10 + k),
                requests=reqs,
                served=False,
                series=sid,
            )
        )
    logged = _log(tmp_path, *frames)
    settings = settings_for("x")
    # one scale for both series (how a panel's live rows were scored before): the large series alone decides
    before = a[a["timestamp"] < origins[0]]
    one = {"load": float(before.groupby("id")["load"].diff().abs().mean())}
    ev = weigh(logged, a, ["load"], "1", "2", one, settings)
    mase = {r["version"]: r["mase"] for r in ev.summary}
    assert mase["1"] < mase["2"] and not ev.decision.promote, (mase, ev.decision.reason)
    # each series on its own scale: the champion's (its ONNX metadata, panel.series.{id}.scale), or the data's
    meta = {
        "variables": ["load"],
        "targets": ["load"],
        "panel": {"series": {sid: {"mean": [0.0], "scale": [scale[(sid, "load")]]} for sid in ("small", "big")}},
    }
    assert live.champion_scale(meta) == scale
    points = live.score_live(logged.rows, a, ["load"])
    for own in (live.champion_scale(meta), None):
        ev = weigh(logged, a, ["load"], "1", "2", own, settings)
        mase = {r["version"]: r["mase"] for r in ev.summary}
        assert ev.decision.promote and mase["2"] < mase["1"], (mase, ev.decision.reason)
        # pooled as the batch monitor pools a panel: the mean over every point of its error in its series' scale
        for v in ("1", "2"):
            p = points[points["model_version"] == v]
            err = (p["forecast"] - p["actual"]).abs() / p["id"].map(lambda i: scale[(i, "load")])
            assert mase[v] == pytest.approx(err.mean())
        assert 1.4 < mase["1"] / mase["2"] < 1.8  # 2 / 1.25, give or take the noise


def test_earlier_days_are_folded_into_one_file_and_days_past_the_retention_removed(tmp_path):
    """A file every few seconds is thousands a day: the service folds each earlier UTC day into one file (the rows
    read the same, the challenger's extra quantile columns too), removes the days older than keep_days, leaves
    today's files and a damaged file as they are, and a second service tidying the same folder changes nothing."""
    from cellcast.pipeline.serving.livelog import tidy

    a = _actuals()
    champ = live_rows(a, _origins(a, 300, 12), H, "1", "champion", 1.0)
    chall = live_rows(a, _origins(a, 300, 12), H, "2", "challenger", 0.5, served=False, quantile_halfwidth=2.0)
    folder = tmp_path / "live"
    folder.mkdir()

    def put(day: str, n: int, frame: pd.DataFrame) -> None:
        frame.to_parquet(folder / f"{day}T0{n}0000000000Z-4242-{n}.parquet", index=False)

    put("20261204", 1, champ.iloc[:8])  # past the retention
    put("20261205", 1, champ.iloc[:8])
    put("20261206", 1, champ.iloc[8:24])
    put("20261206", 2, chall.iloc[8:24])
    put("20261206", 3, champ.iloc[24:32])
    (folder / "20261206T040000000000Z-4242-4.parquet").write_bytes(b"PAR1 not a parquet file")
    put("20261207", 1, champ.iloc[32:40])  # today: still being written to by the service
    put("20261207", 2, chall.iloc[32:40])
    kept = live.read_live(folder).rows
    kept = kept[kept["origin"] >= champ["origin"].iloc[8]]

    done = tidy(folder, keep_days=1.5, today=pd.Timestamp("2026-12-07T12:00:00Z").to_pydatetime())
    names = sorted(f.name for f in folder.glob("*.parquet"))
    assert done == {"folded": 3, "removed": 2}
    assert names == [
        f"20261206T000000000000Z-day-{os.getpid()}.parquet",
        "20261206T040000000000Z-4242-4.parquet",  # damaged: left for the reader to report
        "20261207T010000000000Z-4242-1.parquet",
        "20261207T020000000000Z-4242-2.parquet",
    ]
    after = live.read_live(folder)
    cols = sorted(kept.columns)
    order = ["request_id", "model_version", "step"]
    pd.testing.assert_frame_equal(
        after.rows[cols].sort_values(order).reset_index(drop=True),
        kept[cols].sort_values(order).reset_index(drop=True),
    )
    assert after.rows["load_q0.95"].notna().sum() == 16 + 8  # the challenger's columns survive the fold
    # another service tidying the same folder: nothing left to fold or remove
    assert tidy(folder, keep_days=1.5, today=pd.Timestamp("2026-12-07T13:00:00Z").to_pydatetime()) == {
        "folded": 0,
        "removed": 0,
    }
