"""The anchors alone (head zero, no training): cheap, so many variants per dataset.

    PYTHONPATH=$PWD .venv/bin/python bench/research/anchor_sweep.py [--datasets elecdemand chicago]

A row per variant in results/anchors.jsonl (experiment.py's format, epochs=0: the scores are the anchor's).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import experiment  # noqa: E402

VARIANTS = {
    "elecdemand": [
        ("snaive-day", {"anchor": "snaive", "anchor_season": 48}),
        ("snaive-week", {"anchor": "snaive", "anchor_season": 336}),
        ("profile-week-k1-lvl48", {"anchor": "profile", "anchor_season": 336, "profile_k": 1, "level_steps": 48}),
        ("profile-week-k1-lvl12", {"anchor": "profile", "anchor_season": 336, "profile_k": 1, "level_steps": 12}),
        (
            "profile-week-k3-lvl48-L1056",
            {"anchor": "profile", "anchor_season": 336, "profile_k": 3, "level_steps": 48, "lookback": 1056},
        ),
        ("profile-day-k7-lvl12", {"anchor": "profile", "anchor_season": 48, "profile_k": 7, "level_steps": 12}),
        ("linear", {"anchor": "linear"}),
        ("linear-allvars", {"anchor": "linear", "linear_all_vars": True}),
        ("linear-known", {"anchor": "linear", "future": "known"}),
        ("linear-L1344", {"anchor": "linear", "lookback": 1344}),
        ("linear-known-L1344", {"anchor": "linear", "future": "known", "lookback": 1344}),
        ("linear-oracle", {"anchor": "linear", "future": "oracle"}),
        ("linear-allvars-oracle", {"anchor": "linear", "future": "oracle", "linear_all_vars": True}),
    ],
    "chicago": [
        ("snaive-week", {"anchor": "snaive", "anchor_season": 7}),
        ("profile-week-k1-lvl7", {"anchor": "profile", "anchor_season": 7, "profile_k": 1, "level_steps": 7}),
        ("profile-week-k4", {"anchor": "profile", "anchor_season": 7, "profile_k": 4}),
        ("profile-week-k4-lvl7", {"anchor": "profile", "anchor_season": 7, "profile_k": 4, "level_steps": 7}),
        ("linear", {"anchor": "linear"}),
        ("linear-known", {"anchor": "linear", "future": "known"}),
        ("linear-L364", {"anchor": "linear", "lookback": 364}),
        ("linear-known-L364", {"anchor": "linear", "future": "known", "lookback": 364}),
        ("linear-oracle", {"anchor": "linear", "future": "oracle"}),
        ("linear-known-L364-onehot", {"anchor": "linear", "future": "known", "lookback": 364, "dow_onehot": True}),
    ],
    "glucose": [
        ("naive", {"anchor": "snaive", "anchor_season": 1}),
        ("linear", {"anchor": "linear"}),
        ("linear-allvars", {"anchor": "linear", "linear_all_vars": True}),
        ("linear-known", {"anchor": "linear", "future": "known"}),
    ],
    "sp500": [
        ("naive", {"anchor": "snaive", "anchor_season": 1}),
        ("linear", {"anchor": "linear"}),
    ],
}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(VARIANTS))
    ap.add_argument("--only", nargs="*", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    for name in a.datasets:
        for tag, over in VARIANTS[name]:
            if a.only and tag not in a.only:
                continue
            cfg = {**experiment.DEFAULTS, **over, "epochs": 0}
            experiment.run(name, cfg, f"anchor-{tag}", "anchors.jsonl")


if __name__ == "__main__":
    main()
