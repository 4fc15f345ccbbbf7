"""Issue 12 backtests, from finished `cellcast backtest NAME` projects: per fold the selected candidate's (and each
candidate's) test MASE beside the fold's seasonal-naive bar, weekly seasonal naive and MSTL, and the selected
candidate's interval coverage; then the spread over the folds. Reads reports/NAME/backtest.json.

    PYTHONPATH=$PWD .venv/bin/python bench/backtest_report.py --project DIR --datasets elecdemand chicago \
        [--note "load 5-7"] [--out bench/results/backtest-cpu2t.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path


def weekly(scores: dict) -> str | None:
    """The weekly seasonal naive's name among the fold's baselines (336 half-hours, 7 days, 168 hours...)."""
    for m in (336, 7, 168, 2016, 5):
        if f"seasonal_naive_{m}" in scores:
            return f"seasonal_naive_{m}"
    return None


def rows_of(project: Path, name: str) -> list[dict]:
    bt = json.loads((project / "reports" / name / "backtest.json").read_text())
    out = []
    for f in bt["folds"]:
        sc = f["scores"]
        wk = weekly(sc)
        sel = sc["selected"]
        mstl = sc.get("ref_mstl", {})
        out.append(
            {
                "dataset": name,
                "refit": bt["refit"],
                "fold": f["fold"]["index"],
                "test": f["times"]["test"],
                "trained_on": f["trained_on"],
                "origins": f["origins"],
                "selected": f["selected"],
                "selected_mase": sel["mase"],
                "candidates": {k: v["mase"] for k, v in sc.items() if k in f["val_mase"]},
                "bar": f["bar"],
                "bar_mase": sc[f["bar"]]["mase"],
                "weekly": wk,
                "weekly_mase": sc[wk]["mase"] if wk else None,
                "mstl_mase": mstl.get("mase"),
                "mstl_status": mstl.get("status"),
                "ets_mase": sc.get("ref_ets", {}).get("mase"),
                "ets_status": sc.get("ref_ets", {}).get("status"),
                "theta_mase": sc.get("ref_theta", {}).get("mase"),
                "coverage_80": sel.get("coverage_80"),
                "coverage_90": sel.get("coverage_90"),
                "crps": sel.get("crps"),
                "seconds": f["seconds"],
                "backtest_seconds": bt["seconds"],
            }
        )
    return out


def fmt(v, pct=False):
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", required=True, type=Path)
    ap.add_argument("--datasets", nargs="+", default=["elecdemand", "chicago"])
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    env = {
        "machine": f"{platform.node()} {os.cpu_count()}-core CPU VM (shared)",
        "note": a.note,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
    }
    rows = [r | env for n in a.datasets for r in rows_of(a.project, n)]
    for r in rows:
        print(json.dumps(r))
    print(
        "\n| dataset | fold | test block | selected | its MASE | weekly snaive | vs weekly | MSTL | vs MSTL | "
        "ETS | Theta | cov 80% | cov 90% |"
    )
    print("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        vs_w = fmt(r["selected_mase"] / r["weekly_mase"], True) if r["weekly_mase"] else "-"
        vs_m = fmt(r["selected_mase"] / r["mstl_mase"], True) if r["mstl_mase"] else "-"
        print(
            f"| {r['dataset']} | {r['fold']} | {r['test'][0][:10]} .. {r['test'][1][:10]} | {r['selected']} | "
            f"{fmt(r['selected_mase'])} | {fmt(r['weekly_mase'])} | {vs_w} | "
            f"{fmt(r['mstl_mase']) if r['mstl_mase'] else r['mstl_status']} | {vs_m} | "
            f"{fmt(r['ets_mase']) if r['ets_mase'] else (r['ets_status'] or '-')[:11]} | {fmt(r['theta_mase'])} | "
            f"{fmt(r['coverage_80'], True)} | {fmt(r['coverage_90'], True)} |"
        )
    if a.out:
        with open(a.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
