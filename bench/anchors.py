"""Every anchor of `train.anchor` alone (no training) on the same windows, and the one `auto` keeps.

Per dataset: the windows (window stage), the best seasonal naive on validation (lifecycle.baselines), then the
seasonal naive, the linear anchor (ridge), their mean (combined), the theta anchor and its mean with the linear one
(combined_theta), each scored on validation and test (MASE, every window). On the short series the cells mostly stay
at their anchor, so the anchor is most of the forecast; this is the cheap first look before bench/defaults.py or
bench/corpus.py train anything. Projects as bench/defaults.py takes them (ingested and validated).

    OMP_NUM_THREADS=1 PYTHONPATH=REPO REPO/.venv/bin/python REPO/bench/anchors.py --project /tmp/p \\
        --params /tmp/p/params.yaml --datasets a10 [--out rows.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
from cellcast.pipeline.modeling.evaluate import mase_scale, metrics, seasonal_naive  # noqa: E402
from cellcast.pipeline.registry import lifecycle  # noqa: E402


def run(project: Path, params: Path, name: str) -> dict:
    os.chdir(project)
    settings = load_params(params).for_dataset(name)
    ws = window_dataset(settings)
    season = lifecycle.baselines(ws, settings).anchor_season
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
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "load": round(os.getloadavg()[0], 2),
        "dataset": name,
        "rows": ws.meta.rows,
        "lookback": ws.meta.lookback,
        "horizon": ws.meta.horizon,
        "season": season,
        "theta_alpha": forecasts["theta"].alpha if "theta" in forecasts else None,
        "auto": chosen.kind,
        "auto_test": scores["test"].get(chosen.kind),
        "val": scores["val"],
        "test": scores["test"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, required=True)
    ap.add_argument("--params", type=Path, required=True)
    ap.add_argument("--datasets", nargs="+", required=True)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    for name in a.datasets:
        line = json.dumps(run(a.project.resolve(), a.params.resolve(), name))
        print(line, flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
