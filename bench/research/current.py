"""Today's cellcast model as the reference row: the library's train_candidate with the repository's params.yaml.

    PYTHONPATH=$PWD .venv/bin/python bench/research/current.py [--datasets ...] [--cells rnn lstm gru]

Windows are the window stage's output in the scratch project (harness.SCRATCH); the anchor season is chosen
as pipeline/registry/lifecycle.py `baselines` does (the best seasonal naive on validation that fits the
lookback). Scores on the test split, non-overlapping origins (every horizon) and stride 1 (as BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from cellcast.pipeline.config import load_params  # noqa: E402
from cellcast.pipeline.data.window import load_windows  # noqa: E402
from cellcast.pipeline.modeling.evaluate import evaluate_baselines, season_of, usable_seasons  # noqa: E402
from cellcast.pipeline.modeling.train import Candidate, predictor, train_candidate  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def anchor_season(ws, settings) -> int | None:
    seasons = settings.evaluate.seasons if settings.evaluate.seasons != "auto" else ws.meta.seasons
    seasons = usable_seasons(ws, list(seasons), split="val")
    val = evaluate_baselines(ws, "val", seasons)
    fitting = {k: v for k, v in val.scores.items() if season_of(k) <= ws.meta.lookback and v["coverage"] == 1.0}
    return season_of(min(fitting, key=lambda k: fitting[k]["mase"])) if fitting else None


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(harness.DATASETS))
    ap.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[42])
    ap.add_argument("--out", default="current.jsonl")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    params = load_params(REPO / "params.yaml")
    for name in a.datasets:
        settings = params.for_dataset(name)
        settings = settings.model_copy(update={"paths": settings.paths.under(harness.SCRATCH)})
        ws = load_windows(name, settings)
        d = harness.Data(name)
        anchor = anchor_season(ws, settings)
        for seed in a.seeds:
            # no clock: on a loaded machine the 300 s safety net cut epochs short (not repeatable); epochs bound it
            st = settings.model_copy(
                update={"train": settings.train.model_copy(update={"seed": seed, "time_budget_s": 1e9})}
            )
            for cell in a.cells:
                res = train_candidate(
                    ws, Candidate(cell, st.train.hidden_size, st.train.num_layers), st, anchor, device="cpu"
                )
                run = predictor(res.model)
                row = {
                    "dataset": name,
                    "model": f"cellcast-{cell}",
                    "cell": cell,
                    "seed": seed,
                    "anchor_season": anchor,
                    "train_s": round(res.seconds, 1),
                    "epochs": len(res.history),
                    "best_epoch": res.best_epoch,
                    "initial_val": res.initial_val_loss,
                    "best_val": res.best_val_loss,
                    "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
                    "machine": "2-core CPU VM (shared), torch 2 threads",
                }
                for stride in ("horizon", 1):
                    starts = d.starts_for("test", stride)
                    pred = run(d.inputs(starts))
                    row[f"stride_{stride}"] = d.score(pred, starts)
                    harness.save_forecasts(
                        f"cellcast-{cell}-s{seed}" + ("" if stride == "horizon" else "-stride1"), name, starts, pred
                    )
                harness.append(a.out, row)
                print(
                    f"{name:11s} {cell:4s} seed {seed} anchor {anchor}: MASE {row['stride_horizon']['mase']:.3f} "
                    f"(stride 1: {row['stride_1']['mase']:.3f}) train {row['train_s']}s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
