"""The classical references on a panel (pipeline/modeling/panel_references.py): wall seconds for every series and for a
sample, one after another (one part) and in parts over a local Dask cluster, on the bundled US employment panel.

    PYTHONPATH=$PWD .venv/bin/python bench/panel_references.py [--samples 20 all] [--workers 2] [--out FILE]

In a fresh project folder: `cellcast ingest --bundled us_employment` and `cellcast validate us_employment` (the CLI,
as a user runs them), the window stage in this process, then on the promotion's test origins (a horizon apart) of that
window set, per sample size: the references one part after another (builtin map), then in `--workers` parts over a
local Dask cluster of as many one-thread workers (panel_validation.client_mapper, what the training flow's task runner
does with train.task_runner: dask). Prints JSON lines (seconds, series, fits, pooled and median per-series MASE per
reference), then a markdown table; --out appends the lines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NAME = "us_employment"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", nargs="+", default=["20", "all"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-panel-refs-"))
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    os.chdir(work)
    cli = [str(ROOT / ".venv" / "bin" / "cellcast")]
    for cmd in (["ingest", "--bundled", NAME], ["validate", NAME]):
        subprocess.run(cli + cmd, check=True, capture_output=True)

    from distributed import Client, LocalCluster

    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.data.panel_validation import client_mapper
    from cellcast.pipeline.data.window import window_dataset
    from cellcast.pipeline.modeling import panel_references
    from cellcast.pipeline.modeling.evaluate import forecast_origins

    settings = load_params(work / "params.yaml").for_dataset(NAME)
    ws = window_dataset(settings)
    starts = forecast_origins(ws, "test")
    rows = []
    with (
        LocalCluster(n_workers=a.workers, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        for sample in a.samples:
            n = None if sample == "all" else int(sample)
            s = settings.model_copy(
                update={"evaluate": settings.evaluate.model_copy(update={"panel_reference_sample": n})}
            )
            for how, mapper, parts in (
                ("one part", None, 1),
                (f"dask {a.workers}", client_mapper(client), 4 * a.workers),
            ):
                t0 = time.perf_counter()
                refs = panel_references.reference_rows(ws, starts, s, mapper, parts)
                wall = time.perf_counter() - t0
                first = next(iter(refs.values()))
                row = {
                    "dataset": NAME,
                    "sample": sample,
                    "how": how,
                    "series": first["series_sampled"],
                    "of": first["series_total"],
                    "wall_s": round(wall, 1),
                    "refs": {
                        k: {
                            "status": v["status"][:60],
                            "fits": v["fits"],
                            "cpu_s": v["seconds"],
                            "mase": round(v.get("mase", float("nan")), 3),
                            "median_mase": round(v.get("median_mase", float("nan")), 3),
                        }
                        for k, v in refs.items()
                    },
                    "cpus": os.cpu_count(),
                    "load": os.getloadavg()[0],
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    if a.out:
        with open(a.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    print("\n| sample | how | series | wall s | " + " | ".join(f"{k} MASE (median)" for k in rows[0]["refs"]) + " |")
    print("| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in rows[0]["refs"]) + " |")
    for r in rows:
        cells = " | ".join(f"{v['mase']:.3f} ({v['median_mase']:.3f})" for v in r["refs"].values())
        print(f"| {r['sample']} | {r['how']} | {r['series']} of {r['of']} | {r['wall_s']} | {cells} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
