"""The classical references (modeling/classical.py) on the promotion's test origins, beside the bar and the
champion as evidence, never the bar; a panel's per series, and the best candidate's share of series beating each."""

from __future__ import annotations

import numpy as np

from ..config import Settings
from ..data.panel_windows import PanelWindowSet
from ..data.windowset import WindowSet
from ..modeling.evaluate import forecast_origins
from . import tracking


def reference_rows(ws: WindowSet, settings: Settings, mapper=None, parts: int = 1) -> dict:
    """The classical references of evaluate.references (modeling/classical.py) on the promotion's test origins (a
    horizon apart), each with its scores or the status that says why it has none. A panel: per series, on a sample
    of its series, in `parts` chunks mapped by `mapper` (modeling/panel_references.py)."""
    from ..modeling import classical, panel_references

    if not settings.evaluate.references:
        return {}
    starts = forecast_origins(ws, "test")
    if isinstance(ws, PanelWindowSet):
        return panel_references.reference_rows(ws, starts, settings, mapper, parts)
    return classical.reference_scores(ws, starts, classical.references(ws, starts, settings))


def compare_panel_references(ws: PanelWindowSet, references: dict, starts: np.ndarray, losses: np.ndarray) -> None:
    """The best candidate per series beside each reference on the same origins (the share of series it beats each
    on), logged on the parent run."""
    from ..modeling import panel_references

    panel_references.compare_model(references, ws, starts, losses)
    tracking.log_metrics(
        {
            f"ref_{name}_{k}": row[k]
            for name, row in references.items()
            for k in ("share_model_beats", "model_mean_mase", "model_median_mase")
            if k in row
        }
    )
    tracking.log_dict(references, "references.json")
