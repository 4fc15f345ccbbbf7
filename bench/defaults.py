"""The defaults against a params file's recipe, on the same data: what `cellcast train` would pick and score, without
MLflow, Prefect or the reference rows (their cost is the references' own: evaluate.references).

Per dataset and params file: the windows (window stage), the baselines, the anchor (train.anchor), every candidate
trained (train.cells) and their ensemble (train.ensemble), each scored on validation and test (MASE, every test
window, PyTorch); the candidate with the lowest validation MASE is the one the flow would select. The training part's
wall seconds (anchor + candidates + ensemble) are reported beside it.

    cd /tmp/p && cp REPO/params.yaml . && cellcast ingest --bundled chicago && cellcast validate chicago
    OMP_NUM_THREADS=1 PYTHONPATH=REPO REPO/.venv/bin/python REPO/bench/defaults.py --project /tmp/p \\
        --params /tmp/p/params.yaml --tag defaults --datasets chicago [--threads 1] [--out rows.jsonl]

With --anchors-only: every anchor alone (no training) on the same windows, and the one `auto` keeps (val and test
MASE over every window): the cheap first look on series whose cells mostly stay at their anchor.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellcast.pipeline.config import load_params  # noqa: E402
from cellcast.pipeline.data.window import window_dataset  # noqa: E402
from cellcast.pipeline.modeling.anchor import (  # noqa: E402
    choose_anchor,
    combine_with_seasonal_naive,
    fit_linear_anchor,
    fit_theta_anchor,
    linear_forecast,
    mean_with_linear,
)
from cellcast.pipeline.modeling.evaluate import (  # noqa: E402
    evaluate_forecasts,
    mase_scale,
    metrics,
    predict_windows,
    seasonal_naive,
)
from cellcast.pipeline.modeling.train import (  # noqa: E402
    build_ensemble,
    candidates,
    predictor,
    torch_threads,
    train_candidate,
    use_decoder,
)
from cellcast.pipeline.registry import assessment  # noqa: E402


def _head(ws, name: str, tag: str) -> dict:
    """What every row starts with: when, under what load, which windows."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "load": round(os.getloadavg()[0], 2),
        "dataset": name,
        "tag": tag,
        "rows": ws.meta.rows,
        "lookback": ws.meta.lookback,
        "horizon": ws.meta.horizon,
    }


def run(project: Path, params: Path, name: str, tag: str, threads: int) -> dict:
    os.chdir(project)
    settings = load_params(params).for_dataset(name)
    ws = window_dataset(settings)
    base = assessment.baselines(ws, settings)
    t0 = time.perf_counter()
    with torch_threads(threads):
        anchor = choose_anchor(ws, settings, base.anchor_season)
        results = [
            train_candidate(ws, c, settings, anchor.season, anchor=anchor, device="cpu") for c in candidates(settings)
        ]
        ens = build_ensemble(results, ws, settings)
    train_s = time.perf_counter() - t0
    rows = {}
    for r in [*results, *([ens] if ens else [])]:
        model = r.model.cpu().eval()
        score = {}
        for split in ("val", "test"):
            pred = predict_windows(predictor(model), ws, split)
            score[split] = round(evaluate_forecasts(ws, split, pred)[0]["mase"], 4)
        rows[r.candidate.name] = score | {"best_epoch": r.best_epoch}
    chosen = min(rows, key=lambda k: rows[k]["val"])
    bars = {k: round(v["mase"], 4) for k, v in base.test.scores.items()}
    return _head(ws, name, tag) | {
        "freq": ws.meta.freq,
        "calendar": (ws.meta.calendar or {}).get("parts", []),
        "future": ws.meta.future_names,
        "anchor": anchor.kind,
        "anchor_val_mase": {k: round(v, 4) for k, v in anchor.val_mase.items()},
        "decoder": use_decoder(settings.train.decoder, ws.meta),
        "candidates": rows,
        "chosen": chosen,
        "test_mase": rows[chosen]["test"],
        "baselines_test": bars,
        "train_s": round(train_s, 1),
        "threads": threads,
    }


def anchors_alone(project: Path, params: Path, name: str, tag: str) -> dict:
    """Every anchor of `train.anchor` alone (no training) on the same windows, and the one `auto` keeps: the seasonal
    naive, the linear anchor (ridge), their mean (combined), the theta anchor and its mean with the linear one
    (combined_theta), each scored on validation and test (MASE, every window). On the short series the cells mostly
    stay at their anchor, so this is the cheap first look before training anything."""
    os.chdir(project)
    settings = load_params(params).for_dataset(name)
    ws = window_dataset(settings)
    season = assessment.baselines(ws, settings).anchor_season
    chosen = choose_anchor(ws, settings, season)
    forecasts = {"linear": (lin := fit_linear_anchor(ws, settings))}
    if season and season > 1:
        theta = fit_theta_anchor(ws, settings, season)
        forecasts |= {
            "combined": combine_with_seasonal_naive(ws, lin, season),
            "theta": theta,
            "combined_theta": mean_with_linear(lin, theta.weight.astype("float64")),
        }
    scale = mase_scale(ws)
    scores = {}
    for split in ("val", "test"):
        starts = ws.starts[split]
        y, mask = ws.targets(starts), ws.target_mask(starts)
        row = {k: metrics(y, linear_forecast(ws, starts, a), scale, mask)["mase"] for k, a in forecasts.items()}
        if season:
            row["seasonal_naive"] = metrics(y, seasonal_naive(ws, starts, season), scale, mask)["mase"]
        scores[split] = {k: round(v, 4) for k, v in row.items()}
        # the anchor auto keeps, as it keeps it (window.min_lookback_seasons: it may read the last steps only)
        kept = linear_forecast(ws, starts, chosen.linear) if chosen.linear else None
        if kept is None and season and chosen.kind == "seasonal_naive":
            kept = seasonal_naive(ws, starts, season)
        scores[split]["auto"] = round(metrics(y, kept, scale, mask)["mase"], 4) if kept is not None else None
    return _head(ws, name, tag) | {
        "season": season,
        "theta_alpha": forecasts["theta"].alpha if "theta" in forecasts else None,
        "auto": chosen.kind,
        "auto_span": chosen.linear.span if chosen.linear else None,
        "auto_test": scores["test"]["auto"],
        "val": scores["val"],
        "test": scores["test"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", type=Path, required=True)
    ap.add_argument("--params", type=Path, required=True)
    ap.add_argument("--datasets", nargs="+", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--anchors-only", action="store_true", help="score every anchor alone, train nothing")
    a = ap.parse_args()
    for name in a.datasets:
        if a.anchors_only:
            row = anchors_alone(a.project.resolve(), a.params.resolve(), name, a.tag)
        else:
            row = run(a.project.resolve(), a.params.resolve(), name, a.tag, a.threads)
        line = json.dumps(row)
        print(line, flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
