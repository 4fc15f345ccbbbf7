"""Markdown tables from the results JSONL (pasted into FINDINGS.md).

.venv/bin/python bench/research/report.py > /tmp/tables.md
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def last_by(rows, key):
    out = {}
    for r in rows:
        out[key(r)] = r
    return out


def reference(ds: str) -> list[str]:
    cl = harness.read("classical.jsonl")
    cur = harness.read("current.jsonl")
    naive = last_by([r for r in cl if r["dataset"] == ds and "refit" not in r], lambda r: (r["model"], r["stride"]))
    fits = last_by(
        [r for r in cl if r["dataset"] == ds and "refit" in r],
        lambda r: (r["model"], r["history"], r.get("stride", "horizon")),
    )
    family = [r for (m, s), r in naive.items() if s == "horizon" and r.get("coverage", 1.0) == 1.0]
    bar = min(family, key=lambda r: r["mase"])  # the strongest of the naive family on these windows
    lines = [
        f"| model | MASE (every horizon) | sMAPE | vs {bar['model']} | MASE stride 1 | fit / train s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def add(name, m, sm, s1, t):
        lines.append(f"| {name} | {m:.3f} | {sm:.2f} | {100 * m / bar['mase']:.0f}% | {s1} | {t} |")

    for (m, s), r in naive.items():
        if s == "horizon":
            s1 = naive.get((m, 1))
            add(m, r["mase"], r["smape"], f"{s1['mase']:.3f}" if s1 else "", "")
    for (m, hist, stride), r in fits.items():
        if stride != "horizon":
            continue
        s1 = fits.get((m, hist, 1))
        add(
            f"{m.upper()} ({r['refit']}, history {hist}, seasons {r['seasons']})",
            r["mase"],
            r["smape"],
            f"{s1['mase']:.3f}" if s1 else "",
            f"{r['fit_s_total']:.0f} total, {r['fit_s_mean']:.2f}/fit",
        )
    for r in cur:
        if r["dataset"] == ds:
            h, s1 = r["stride_horizon"], r["stride_1"]
            add(
                f"cellcast today: {r['cell']} (anchor {r['anchor_season']})" + (" *" if r.get("note") else ""),
                h["mase"],
                h["smape"],
                f"{s1['mase']:.3f}",
                f"{r['train_s']:.0f}",
            )
    return lines


def experiments(ds: str, files=("anchors.jsonl", "experiments.jsonl")) -> list[str]:
    lines = [
        "| tag | cell | seed | MASE (every horizon) | anchor alone | MASE stride 1 | train s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = {}
    for f in files:  # a rerun of the same tag/cell/seed (deterministic) replaces the earlier row
        for r in harness.read(f):
            if r["dataset"] == ds:
                rows[(r["tag"], r["cell"], r["cfg"]["seed"])] = r
    for r in rows.values():
        if True:
            a = r.get("anchor_only", {}).get("stride_horizon", {}).get("mase")
            lines.append(
                f"| {r['tag']} | {r['cell']} | {r['cfg']['seed']} | {r['stride_horizon']['mase']:.3f} | "
                f"{'' if a is None else f'{a:.3f}'} | {r['stride_1']['mase']:.3f} | "
                f"{r.get('train_s', r.get('total_s', ''))} |"
            )
    return lines


if __name__ == "__main__":
    for ds in sys.argv[1:] or harness.DATASETS:
        print(f"\n### {ds}: reference rows\n")
        print("\n".join(reference(ds)))
        print(f"\n### {ds}: experiments\n")
        print("\n".join(experiments(ds)))
