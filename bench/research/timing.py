"""Training cost of today's model vs the recipe, back to back on the same machine state (ratio per round).

    PYTHONPATH=$PWD .venv/bin/python bench/research/timing.py --dataset elecdemand --rounds 2

Each round: today's Forecaster (library train_candidate, 1 epoch of 8000 windows) then the recipe
(ridge anchor fit + 1 epoch of 8000 windows of the prototype loop), same cell, 2 torch threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import current  # noqa: E402
import experiment  # noqa: E402
import harness  # noqa: E402
import proto  # noqa: E402

from cellcast.pipeline.config import load_params  # noqa: E402
from cellcast.pipeline.data.window import load_windows  # noqa: E402
from cellcast.pipeline.modeling.train import Candidate, train_candidate  # noqa: E402

RECIPE = {
    "elecdemand": {"anchor": "linear", "future": "known"},
    "chicago": {"anchor": "linear", "future": "known", "lookback": 364},
}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="elecdemand")
    ap.add_argument("--cell", default="gru")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--decoder", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    st = load_params(current.REPO / "params.yaml").for_dataset(a.dataset)
    st = st.model_copy(
        update={
            "paths": st.paths.under(harness.SCRATCH),
            "train": st.train.model_copy(update={"epochs": 1, "time_budget_s": 1e9}),
        }
    )
    ws = load_windows(a.dataset, st)
    anchor = current.anchor_season(ws, st)
    d = harness.Data(a.dataset)
    cfg = {**experiment.DEFAULTS, **RECIPE[a.dataset], "epochs": 1, "cells": a.cell, "decoder": a.decoder}
    ser = experiment.series(d, cfg)
    for r in range(a.rounds):
        t0 = time.perf_counter()
        train_candidate(ws, Candidate(a.cell, 64, 1), st, anchor, device="cpu")
        t_today = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = experiment.build(d, ser, cfg, a.cell)
        proto.fit_linear_anchor(model, ser)
        t_fit = time.perf_counter() - t0
        proto.train(model, ser, proto.TrainCfg(epochs=1))
        t_recipe = time.perf_counter() - t0
        row = {
            "dataset": a.dataset,
            "cell": a.cell,
            "decoder": a.decoder,
            "round": r,
            "today_epoch_s": round(t_today, 1),
            "recipe_ridge_s": round(t_fit, 1),
            "recipe_epoch_s": round(t_recipe, 1),
            "ratio": round(t_recipe / t_today, 2),
            "load": os.getloadavg()[0],
        }
        harness.append("timing.jsonl", row)
        print(row, flush=True)


if __name__ == "__main__":
    main()
