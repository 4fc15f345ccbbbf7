"""What a training run logs to MLflow: the parent run's inputs (the data's shape, baselines, references, the
backtest's selection, the validation report), each candidate's run (params, models, scores, parity tags),
and the comparison run of local models."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Settings
from ..data.windowset import WindowSet
from ..modeling.train import TrainResult
from . import tracking
from .assessment import Baselines, CandidateReport
from .lineage import lineage
from .metadata import model_metadata


def log_inputs(
    ws: WindowSet,
    base: Baselines,
    reports: list[CandidateReport],
    references: dict,
    selection: dict | None,
    method: str,
    validation_report: Path | None,
) -> None:
    """On the parent run: the data's shape, the baselines' and references' scores, the backtest's selection means and
    the validation report."""
    tracking.log_params(
        {
            "dataset": ws.meta.name,
            "lookback": ws.meta.lookback,
            "horizon": ws.meta.horizon,
            "freq": ws.meta.freq,
            "variables": ",".join(ws.meta.variables),
            "candidates": ",".join(r.name for r in reports),
            "anchor_season": base.anchor_season,
            "rows": ws.meta.rows,
            **{f"windows_{k}": v for k, v in ws.meta.counts.items()},
        }
    )
    for split, rep in (("val", base.val), ("test", base.test)):
        for bname, sc in rep.scores.items():
            tracking.log_metrics({f"{split}_{bname}_{k}": v for k, v in sc.items()})
    tracking.log_dict(base.to_dict(), "baselines.json")
    for rname, row in references.items():
        tracking.log_metrics(
            {f"ref_{rname}_test_{k}": row[k] for k in ("mase", "smape", "mae", "rmse") if k in row}
            | {f"ref_{rname}_{k}": row[k] for k in ("mean_mase", "median_mase", "series") if k in row}
            | {f"ref_{rname}_seconds": row["seconds"]}
        )
    tracking.set_tags(
        {f"ref.{rname}.status": row["status"] for rname, row in references.items()} | {"selection": method}
    )
    if references:
        tracking.log_dict(references, "references.json")
    if selection:
        tracking.log_metrics({f"backtest_{k}_mase_mean": v for k, v in selection.get("mean_mase", {}).items()})
    if validation_report and Path(validation_report).is_file():
        tracking.log_artifact(validation_report, "validation")


def log_candidate(ws: WindowSet, settings: Settings, res: TrainResult, rep: CandidateReport, tags: dict) -> None:
    c = res.candidate
    params = {
        "cell": c.cell,
        "hidden_size": c.hidden_size,
        "num_layers": c.num_layers,
        **{k: v for k, v in settings.train.model_dump().items() if k not in ("cells", "hidden_size", "num_layers")},
        "anchor_season": res.model.spec.anchor_season,
        "rnn_steps_used": res.model.spec.steps,
        "anchor_used": (rep.anchor or {}).get("kind"),
        "quantiles": ",".join(f"{q:g}" for q in rep.quantiles),
        "calibration_windows": (rep.calibration or {}).get("windows"),
        "future_inputs": ",".join(ws.meta.future_names),
    }
    with tracking.candidate_run(rep.name, params=params, tags=tags | {"cell": c.cell}) as run_id:
        rep.run_id = run_id
        # the models before the metrics: MLflow copies every metric the run already holds onto each model it logs
        # (a history read per metric key, seconds per model); the scores are linked to the ONNX model directly below
        example, future = ws.inputs(ws.starts["test"][:2])
        tracking.log_torch_model(res.model, example, future_example=future)
        model_id = None
        if rep.onnx_path and rep.parity_ok:
            rep.model_uri = tracking.log_onnx_model(
                Path(rep.onnx_path), example, future_example=future, metadata=model_metadata(ws, settings, rep.name)
            )
            model_id = rep.model_uri.removeprefix("models:/")
        for row in res.history:
            tracking.log_metrics(
                {"train_loss": row["train_loss"], "val_loss": row["val_loss"], "lr": row["lr"]}, step=row["epoch"]
            )
        tracking.log_metrics(
            {
                "initial_val_loss": res.initial_val_loss,
                "best_val_loss": res.best_val_loss,
                "best_epoch": res.best_epoch,
                "train_seconds": res.seconds,
                "train_windows_per_s": res.windows_per_s,
                **{f"val_{k}": v for k, v in rep.val.items()},
                **{f"test_{k}": v for k, v in rep.test.items()},
                **{f"test_mase_h{i + 1}": v for i, v in enumerate(rep.by_step)},
                **{
                    f"test_{k}_h{i + 1}": v
                    for k, steps in rep.interval_by_step.items()
                    for i, v in enumerate(steps)
                    if np.isfinite(v)
                },
                "test_quantile_crossings": rep.crossings,
            },
            model_id=model_id,
        )
        tracking.set_tags(
            {
                "stopped": rep.stopped,
                "device": rep.device,
                "parity.ok": str(rep.parity_ok),
                "parity.reason": rep.parity.get("reason", ""),
                **{
                    f"parity.{name}.max_rel": f"{b['max_rel_to_scale']:.3g}"
                    for name, b in rep.parity.get("branches", {}).items()
                },
            }
        )
        tracking.log_dict(asdict(rep), "candidate.json")
        if rep.panel:
            tracking.log_metrics(
                {
                    f"panel_{k}": v
                    for k, v in rep.panel["aggregate"].items()
                    if isinstance(v, (int, float)) and v is not None
                }
            )
            tracking.log_table(pd.DataFrame(rep.panel["series"]), "per_series.json")
        tracking.log_dict({"bounds": ws.meta.value_bounds, "profiled_on": ws.meta.split_times["train"]}, "bounds.json")


def log_local_comparison(ws: WindowSet, settings: Settings, comparison: dict) -> str:
    """Local models (train.strategy: local; modeling/local.py) as one comparison run `local-NAME` of the dataset's
    experiment: per candidate the aggregate as metrics (`<candidate>_panel_*`), the per-series table, the series
    that could not train. Nothing is registered. Returns the run id."""
    tags = lineage(ws, settings) | {"cellcast.kind": "comparison", "strategy": "local"}
    with tracking.parent_run(ws.meta.name, run_name=f"local-{ws.meta.name}", tags=tags) as run_id:
        for cand, c in comparison.items():
            tracking.log_metrics(
                {
                    f"{cand}_panel_{k}": v
                    for k, v in c["aggregate"].items()
                    if isinstance(v, (int, float)) and v is not None
                }
            )
            tracking.log_metrics(
                {
                    f"{cand}_models": c["models"],
                    f"{cand}_train_seconds": c["seconds"],
                    f"{cand}_train_windows_per_s": c["windows_per_s"],
                }
            )
            tracking.log_table(pd.DataFrame(c["series"]), f"{cand}/per_series.json")
            if c["failed"]:
                tracking.log_dict(c["failed"], f"{cand}/failed.json")
    return run_id
