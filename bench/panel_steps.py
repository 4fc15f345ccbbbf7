"""The train stage of bench/panel_scale.py step by step: each step's anonymous peak (RssAnon) on a kept folder.

    nice -n 19 .venv/bin/python bench/panel_steps.py --work DIR [--stride 24] [--train] [--out rows.jsonl] [--tag T]

DIR: a folder `panel_scale.py --keep DIR` left with its window set (data/scale/windows.npz). One process, one step
after another, as the train stage calls them: the window set loaded (mapped), the promotion's origins, the baselines,
the anchor's choice, (--train: the candidate's training, the bench's small budget), the interval-score gate's bar
(the seasonal naive's empirical band, scored on the test origins) and the drift reference. Per step: RssAnon held
after it and its peak (sampled every 5 ms by a thread: a numpy call holding the GIL may hide a short peak from it),
in MiB; the scores each step made are written beside them, to compare two trees' numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def anon_mib() -> int:
    with open("/proc/self/status") as f:
        return int(f.read().split("RssAnon:")[1].split()[0]) >> 10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="a folder panel_scale.py --keep left (with its window set)")
    ap.add_argument("--stride", type=int, default=24, help="window.stride, as panel_scale.py --stride")
    ap.add_argument("--train", action="store_true", help="also train the candidate (the bench's budget)")
    ap.add_argument("--out", help="append the JSON line to this file")
    ap.add_argument("--tag", default="", help="a label for the line (the tree measured)")
    args = ap.parse_args()
    os.environ["PANEL_SCALE_STRIDE"] = str(args.stride)
    import panel_scale

    work = Path(args.work)
    os.chdir(work)
    s = panel_scale.settings_for(work)
    import torch

    from cellcast.pipeline.data.window import load_windows
    from cellcast.pipeline.modeling.anchor import choose_anchor
    from cellcast.pipeline.modeling.evaluate import empirical_interval_scores, forecast_origins, season_of
    from cellcast.pipeline.modeling.train import Candidate, train_candidate
    from cellcast.pipeline.registry.assessment import baselines
    from cellcast.pipeline.registry.metadata import training_reference

    torch.set_num_threads(1)
    peak = [0]

    def watch() -> None:
        while True:
            peak[0] = max(peak[0], anon_mib())
            time.sleep(0.005)

    threading.Thread(target=watch, daemon=True).start()
    out: dict = {"bench": "panel_steps", "tag": args.tag, "work": str(work), "load_avg": round(os.getloadavg()[0], 2)}

    def step(name: str, f, *a, **k):
        peak[0] = anon_mib()
        t0 = time.perf_counter()
        r = f(*a, **k)
        time.sleep(0.02)
        out[name] = {"held_mib": anon_mib(), "peak_mib": peak[0], "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{name:16s} held {out[name]['held_mib']:6d} MiB  peak {peak[0]:6d} MiB  {out[name]['seconds']} s")
        return r

    ws = step("load", load_windows, s)
    out["series"] = len(ws.series_ids)
    ws = step("origins", lambda: ws.with_starts(val=forecast_origins(ws, "val"), test=forecast_origins(ws, "test")))
    b = step("baselines", baselines, ws, s)
    anchor = step("anchor", choose_anchor, ws, s, b.anchor_season)
    if args.train:
        t = panel_scale.TRAIN
        step(
            "train_candidate",
            train_candidate,
            ws,
            Candidate("gru", t["hidden_size"], t["num_layers"]),
            s,
            anchor=anchor,
        )
    levels = list(s.evaluate.quantiles)
    band = step(
        "bar_band", empirical_interval_scores, ws, season_of(b.val.best), levels, rank=s.evaluate.calibration_rank
    )
    ref = step("drift_reference", training_reference, ws, s)
    out["scores"] = {
        "baselines_val": b.val.scores,
        "baselines_test": b.test.scores,
        "anchor": [anchor.kind, anchor.val_mase],
        "bar": b.val.best,
        "bar_band": band,
        "reference_md5": hashlib.md5(json.dumps(ref, sort_keys=True, default=str).encode()).hexdigest(),
    }
    out["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(out, default=str) + "\n")


if __name__ == "__main__":
    main()
