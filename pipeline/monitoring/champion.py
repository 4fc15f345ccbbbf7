"""What the monitor needs of the serving model: its ONNX metadata and registry tags, and the reference profile of
the rows it was trained on (from the model, or recomputed for a model that records none)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..catalog import window_paths
from ..config import Settings
from ..data import drift as drifts

log = logging.getLogger(__name__)


@dataclass
class Champion:
    """What the monitor needs of the serving model: from its ONNX metadata and its registry tags."""

    version: int
    targets: list[str]
    variables: list[str]
    lookback: int
    horizon: int
    test_mase: float | None  # its MASE on the test split, tagged at registration
    season: int  # the seasonal naive it is compared with (its strongest baseline)
    reference: dict | None  # data/drift.reference_profile of its training rows
    reference_source: str
    bounds: dict[str, list[float]]  # plausible range per variable, profiled on its training rows
    panel: dict | None = None  # a panel model: its ONNX metadata `panel` (each series' ids, status, mean and scale)
    series_test_mase: dict[str, float] = field(default_factory=dict)  # a panel: each series' own test MASE


def _season(tags: dict, metadata: dict) -> int:
    name = tags.get("promotion.baseline_name") or ""
    if name == "naive":
        return 1
    if name.startswith("seasonal_naive_") and name.rsplit("_", 1)[1].isdigit():
        return int(name.rsplit("_", 1)[1])
    anchor = (metadata.get("spec") or {}).get("anchor_season")
    if anchor:
        return int(anchor)
    from ..data.frequency import seasons_for

    seasons = seasons_for(metadata["freq"], schedule=metadata.get("schedule")) if metadata.get("freq") else []
    return seasons[0] if seasons else 1


def _float(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def load_champion(settings: Settings, frame: pd.DataFrame) -> Champion:
    """The registry's champion of the dataset, and its training reference (from the model; for a model trained
    before models carried one, recomputed from the rows it was trained on when those are known)."""
    from ..engine.inference import OnnxForecaster
    from ..registry import tracking

    path, info = tracking.download_model(settings.model_name, "champion")  # NoChampionError: one line
    engine = OnnxForecaster.from_path(path, device="cpu")
    md = engine.metadata
    reference, source = md.get("reference"), "the model's metadata"
    if not reference:
        reference, source = _rebuilt_reference(settings, frame, engine, md, info.tags)
    test = _float(info.tags.get("test_mase")) or _float(info.tags.get("promotion.candidate_mase"))
    bounds = md.get("bounds") or (reference or {}).get("bounds") or {}
    return Champion(
        version=int(info.version),
        targets=list(engine.targets),
        variables=list(engine.variables),
        lookback=int(engine.lookback),
        horizon=int(engine.horizon),
        test_mase=test,
        season=_season(info.tags, md),
        reference=reference,
        reference_source=source,
        bounds={k: list(v) for k, v in bounds.items()},
        panel=md.get("panel"),
        series_test_mase=_series_test_mase(info.run_id) if md.get("panel") else {},
    )


def _series_test_mase(run_id: str) -> dict[str, float]:
    """A panel champion's test MASE per series (its candidate run's per_series.json); {} where the run has none."""
    from ..registry import tracking

    table = tracking.read_table(run_id, "per_series.json") if run_id else None
    if table is None or "mase" not in table.columns:
        return {}
    ok = table[table["status"] == "ok"] if "status" in table.columns else table
    return {str(r.series_id): float(r.mase) for r in ok.itertuples() if np.isfinite(r.mase)}


def _rebuilt_reference(settings, frame, engine, md, tags) -> tuple[dict | None, str]:
    end = ((md.get("split_times") or {}).get("train") or [None, None])[1] or tags.get("train_end")
    source = "its recorded training split"
    if end is None:
        # the window set on disk describes this model's rows when it was cut from the same data
        js = window_paths(settings)[1]
        if js.is_file():
            wm = json.loads(js.read_text())
            if md.get("data_md5") and wm.get("data_md5") == md.get("data_md5"):
                end, source = wm["split_times"]["train"][1], "the window set it was trained from"
    if end is None:
        return None, "none: the model records no training split"
    train = frame[frame["timestamp"] <= pd.Timestamp(end)]
    m = settings.monitor
    ref = drifts.reference_profile(
        train,
        list(engine.variables),
        list(engine.targets),
        m.psi_bins,
        settings.validate_.profile_tolerance,
        window=drifts.window_rows(m.drift_rows, engine.lookback, m.psi_bins),
        season=None
        if "series_id" in frame.columns
        else drifts.residual_season(md.get("freq"), len(train), md.get("schedule")),
    )
    return ref, f"recomputed from {source} (rows up to {end})"
