"""Issue 12's figures from finished `cellcast run NAME` projects: per dataset, the champion against weekly seasonal
naive, interval coverage and width on test, the calibration modes on the trained candidates, and with/without
known-future inputs (two projects) with a Diebold-Mariano test on the same test origins.

    cd /tmp/p && cp REPO/params.yaml . && cellcast run elecdemand && ...          # the projects first
    PYTHONPATH=$PWD .venv/bin/python bench/forecast_quality.py --project /tmp/p \\
        --datasets elecdemand chicago glucose sp500
    PYTHONPATH=$PWD .venv/bin/python bench/forecast_quality.py --project /tmp/p --without /tmp/p-nocal \\
        --datasets chicago elecdemand                                             # calendar: with vs without
    PYTHONPATH=$PWD .venv/bin/python bench/forecast_quality.py --project /tmp/p --calibration --datasets chicago

It reads what the runs wrote (reports/NAME/train_summary.json, data/NAME/windows.*, data/NAME/models/*.onnx) and,
for --calibration, resumes each candidate from its finished checkpoint (no training) and re-calibrates it every way.
Prints JSON lines, then markdown; --out appends the lines to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellcast.pipeline.config import load_params  # noqa: E402
from cellcast.pipeline.data.window import load_windows  # noqa: E402
from cellcast.pipeline.engine.inference import OnnxForecaster  # noqa: E402
from cellcast.pipeline.modeling.evaluate import (
    evaluate_forecasts,
    forecast_origins,
    forecast_windows,  # noqa: E402
    window_losses,
)
from cellcast.pipeline.registry.promotion import dm_test  # noqa: E402

ROWS: list[dict] = []


def emit(**row) -> dict:
    row = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), "load": os.getloadavg()[0], **row}
    ROWS.append(row)
    print(json.dumps(row, default=float))
    return row


def project(root: Path, name: str):
    os.chdir(root)
    settings = load_params(root / "params.yaml").for_dataset(name)
    ws = load_windows(settings)
    summary = json.loads((root / "reports" / name / "train_summary.json").read_text())
    return settings, ws, summary


def engine_of(root: Path, name: str, candidate: str) -> OnnxForecaster:
    return OnnxForecaster.from_path(root / "data" / name / "models" / f"{candidate}.onnx", device="cpu")


def quality(root: Path, name: str) -> None:
    _, ws, summary = project(root, name)
    base = summary["baselines"]["test"]["scores"]
    weekly = [k for k in base if k.startswith("seasonal_naive_")]
    weekly = {
        "elecdemand": "seasonal_naive_336",
        "chicago": "seasonal_naive_7",
        "glucose": "seasonal_naive_2016",
        "sp500": "seasonal_naive_5",
    }.get(name, weekly[-1] if weekly else "naive")
    best = next(c for c in summary["candidates"] if c["name"] == summary["best"])
    t = best["test"]
    emit(
        kind="quality",
        dataset=name,
        champion=summary["champion_after"],
        best=best["name"],
        promoted=summary["decision"]["promote"],
        test_mase=t["mase"],
        weekly=weekly,
        weekly_mase=base.get(weekly, {}).get("mase"),
        naive_mase=base["naive"]["mase"],
        coverage_80=t.get("coverage_80"),
        coverage_90=t.get("coverage_90"),
        width_80=t.get("width_80"),
        width_90=t.get("width_90"),
        winkler_90=t.get("winkler_90"),
        crps=t.get("crps"),
        anchor=(best.get("anchor") or {}).get("kind"),
        seconds=sum(c["seconds"] for c in summary["candidates"] if c["name"] != "ensemble"),
        reason=summary["decision"]["reason"],
    )


def with_without(root: Path, other: Path, name: str) -> None:
    _, ws_a, sa = project(root, name)
    _, ws_b, sb = project(other, name)
    ea, eb = engine_of(root, name, sa["best"]), engine_of(other, name, sb["best"])
    out = {}
    for tag, ws, eng in (("with", ws_a, ea), ("without", ws_b, eb)):
        y, q = forecast_windows(lambda x, f, e=eng: e.predict_all(x, f)[:2], ws, ws.starts["test"])
        out[tag] = evaluate_forecasts(ws, "test", y, q, eng.quantiles)[0]
    origins = forecast_origins(ws_a, "test")
    assert np.array_equal(origins, forecast_origins(ws_b, "test")), "the two projects cut different test windows"
    la = window_losses(ws_a, origins, ea.predict(*ws_a.inputs(origins)))
    lb = window_losses(ws_b, origins, eb.predict(*ws_b.inputs(origins)))
    dm = dm_test(la - lb)
    # every test window (every origin and time of day): consecutive windows share all but one target, so the
    # long-run variance takes autocovariances up to two horizons
    every = ws_a.starts["test"]
    da = window_losses(ws_a, every, ea.predict(*ws_a.inputs(every))) - window_losses(
        ws_b, every, eb.predict(*ws_b.inputs(every))
    )
    dm_all = dm_test(da, lag=2 * ws_a.meta.horizon)
    emit(
        kind="calendar",
        dataset=name,
        with_best=sa["best"],
        without_best=sb["best"],
        with_future=ea.future_names,
        with_mase=out["with"]["mase"],
        without_mase=out["without"]["mase"],
        gain_pct=100 * (1 - out["with"]["mase"] / out["without"]["mase"]),
        with_coverage_90=out["with"].get("coverage_90"),
        without_coverage_90=out["without"].get("coverage_90"),
        dm=dm.statistic,
        p_value=dm.p_value,
        origins=dm.n,
        with_origins_mase=float(la.mean()),
        without_origins_mase=float(lb.mean()),
        dm_all=dm_all.statistic,
        p_all=dm_all.p_value,
        windows_all=dm_all.n,
    )


def calibration(root: Path, name: str) -> None:
    import torch

    from cellcast.pipeline.modeling.anchor import choose_anchor
    from cellcast.pipeline.modeling.evaluate import mase_scale
    from cellcast.pipeline.modeling.quantiles import conformal_shift, quantile_scores
    from cellcast.pipeline.modeling.train import candidates, quantile_predictor, train_candidate
    from cellcast.pipeline.registry.assessment import baselines

    settings, ws, summary = project(root, name)
    anchor = choose_anchor(ws, settings, baselines(ws, settings).anchor_season)
    ck = Path(settings.paths.checkpoints) / name / (ws.meta.data_md5 or "data")
    levels = settings.evaluate.quantiles
    test, val = ws.starts["test"], ws.starts["val"]
    _, yt = ws.batch(test)
    scale, mask = mase_scale(ws), ws.target_mask(test)
    for cand in candidates(settings):
        r = train_candidate(ws, cand, settings, anchor=anchor, checkpoint_dir=ck)  # finished: resumes, trains nothing
        m = r.model
        for windows in ("all", 400, 200):
            starts = val if windows == "all" else val[-windows:]
            m.q_shift.zero_()
            _, qv = quantile_predictor(m)(*ws.inputs(starts))
            _, yv = ws.batch(starts)
            for mode in ("none", "two_sided", "widen", "guarded"):
                if mode == "none" and windows != "all":
                    continue
                shift = (
                    np.zeros_like(m.q_shift.numpy())
                    if mode == "none"
                    else conformal_shift(yv, qv, levels, ws.target_mask(starts), mode)
                )
                m.q_shift.copy_(torch.from_numpy(shift))
                _, q = quantile_predictor(m)(*ws.inputs(test))
                sc = quantile_scores(yt, q, levels, scale, mask)[0]
                emit(
                    kind="calibration",
                    dataset=name,
                    candidate=r.candidate.name,
                    mode=mode,
                    windows=windows,
                    coverage_80=sc.get("coverage_80"),
                    coverage_90=sc.get("coverage_90"),
                    winkler_90=sc.get("winkler_90"),
                )


def tables() -> None:
    q = [r for r in ROWS if r["kind"] == "quality"]
    if q:
        print(
            "\n| dataset | champion (best candidate) | test MASE | weekly seasonal naive | ratio | naive "
            "| 80% coverage (width) | 90% coverage (width) | 90% Winkler | CRPS | anchor |"
        )
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for r in q:
            champ = f"v{r['champion']} ({r['best']})" if r["champion"] else f"none ({r['best']} not promoted)"
            ratio = r["test_mase"] / r["weekly_mase"] if r["weekly_mase"] else float("nan")
            print(
                f"| {r['dataset']} | {champ} | {r['test_mase']:.3f} | {r['weekly']} {r['weekly_mase']:.3f} | "
                f"{100 * ratio:.0f}% | {r['naive_mase']:.3f} | {100 * r['coverage_80']:.1f}% ({r['width_80']:.2f}) | "
                f"{100 * r['coverage_90']:.1f}% ({r['width_90']:.2f}) | {r['winkler_90']:.2f} | {r['crps']:.3f} | "
                f"{r['anchor']} |"
            )
    c = [r for r in ROWS if r["kind"] == "calendar"]
    if c:
        print(
            "\n| dataset | known-future inputs | test MASE with (every window) | without | gain | DM, every window "
            "(p) | MASE with / without on the promotion's origins | DM there (p, origins) |"
        )
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in c:
            print(
                f"| {r['dataset']} | {', '.join(r['with_future'])} | {r['with_mase']:.3f} ({r['with_best']}) | "
                f"{r['without_mase']:.3f} ({r['without_best']}) | {r['gain_pct']:.1f}% | {r['dm_all']:.2f} "
                f"({r['p_all']:.3g}, {r['windows_all']}) | "
                f"{r['with_origins_mase']:.3f} / {r['without_origins_mase']:.3f} "
                f"| {r['dm']:.2f} ({r['p_value']:.3g}, {r['origins']}) |"
            )
    k = [r for r in ROWS if r["kind"] == "calibration"]
    if k:
        print(
            "\n| dataset | candidate | calibration | validation windows | 80% coverage | 90% coverage | 90% Winkler |"
        )
        print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
        for r in k:
            print(
                f"| {r['dataset']} | {r['candidate']} | {r['mode']} | {r['windows']} | {100 * r['coverage_80']:.1f}% | "
                f"{100 * r['coverage_90']:.1f}% | {r['winkler_90']:.2f} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, required=True, help="a folder where `cellcast run NAME` ran")
    ap.add_argument(
        "--without", type=Path, help="the same runs without known-future inputs (calendar: with vs without)"
    )
    ap.add_argument("--datasets", nargs="+", default=["elecdemand", "chicago", "glucose", "sp500"])
    ap.add_argument("--calibration", action="store_true", help="re-calibrate every candidate every way (no training)")
    ap.add_argument("--out", type=Path, help="append the JSON lines here")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    root = a.project.resolve()
    out = a.out.resolve() if a.out else None  # the projects are worked in as the current folder
    for name in a.datasets:
        if a.calibration:
            calibration(root, name)
        elif a.without:
            with_without(root, a.without.resolve(), name)
        else:
            quality(root, name)
    tables()
    if out:
        with open(out, "a") as f:
            for r in ROWS:
                f.write(json.dumps(r, default=float) + "\n")


if __name__ == "__main__":
    main()
