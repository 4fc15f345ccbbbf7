"""The result of one evaluation of the monitor: what was scored, the drift, the verdict; its flat figures are the
MLflow metrics and a row of scores.parquet."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .verdict import Verdict


@dataclass
class MonitorReport:
    dataset: str
    model_name: str
    version: int
    evaluation: int  # the step of this evaluation (1, 2, ...)
    at: str  # when it ran (UTC)
    data_until: str  # the latest actual
    window_start: str
    accuracy: dict
    test_mase: float | None
    mase_ratio: float | None
    season: int
    drift: dict[str, dict]
    reference: str  # where the training reference came from
    thresholds: dict
    verdict: Verdict
    run_id: str | None = None
    files: dict = field(default_factory=dict)
    # a panel (monitoring/panel.py): series, judged, past, share_past, share_limit, worst (the worst series' rows);
    # `accuracy` is then pooled over every series' points and `drift` holds each variable's worst series
    panel: dict = field(default_factory=dict)

    def figures(self) -> dict:
        """Flat numbers: the MLflow metrics and a scores.parquet row."""
        out = {k: v for k, v in self.accuracy.items() if isinstance(v, (int, float))}
        out["test_mase"] = self.test_mase if self.test_mase is not None else float("nan")
        out["mase_ratio"] = self.mase_ratio if self.mase_ratio is not None else float("nan")
        for var, d in self.drift.items():
            out[f"psi.{var}"], out[f"outside.{var}"] = d["psi"], d["outside"]
            if d.get("residual_psi") is not None:
                out[f"residual_psi.{var}"] = d["residual_psi"]
        psis = [d["psi"] for d in self.drift.values() if np.isfinite(d["psi"])]
        outs = [d["outside"] for d in self.drift.values() if np.isfinite(d["outside"])]
        out["psi_max"] = max(psis) if psis else float("nan")
        out["outside_max"] = max(outs) if outs else float("nan")
        out["breaches"] = len(self.verdict.breaches)
        out["retrain"] = int(self.verdict.retrain)
        out["champion_version"] = self.version
        if self.panel:
            out["panel_series_judged"] = self.panel["judged"]
            out["panel_series_past"] = self.panel["past"]
            out["panel_share_past"] = self.panel["share_past"] if self.panel["share_past"] is not None else float("nan")
        return out
