"""Same windows, several origin phases: the classical rows refitted every N test windows vs models' stride-1
forecasts restricted to the same windows (elecdemand's every-horizon origins all sit at 06:00).

    .venv/bin/python bench/research/phases.py elecdemand mstl-h2688-stride12 anchor-linear-gru-s42-stride1 ...
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def main(ds: str, ref: str, others: list[str]):
    d = harness.Data(ds)
    starts, pred = harness.load_forecasts(ref, ds)
    rows = [(ref, d.score(pred, starts))]
    for tag in others:
        s1, p1 = harness.load_forecasts(tag, ds)
        pos = np.searchsorted(s1, starts)
        assert (s1[pos] == starts).all()
        rows.append((tag, d.score(p1[pos], starts)))
    sn = d.score(d.seasonal_naive(starts, max(d.seasons)), starts)
    print(f"{ds}: {len(starts)} origins ({ref}'s), weekly seasonal naive MASE {sn['mase']:.3f}")
    for tag, sc in rows:
        print(f"| {tag} | {sc['mase']:.3f} | {100 * sc['mase'] / sn['mase']:.0f}% |")
        harness.append(
            "phases.jsonl", {"dataset": ds, "origins_from": ref, "model": tag, **sc, "snaive_week_mase": sn["mase"]}
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
