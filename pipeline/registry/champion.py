"""The champion beside a training run's best: re-scored by ONNX Runtime on the test origins it never
trained on, and whether the best is the very model it already is."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..data.windowset import WindowSet
from ..errors import CellcastError
from ..modeling.evaluate import (
    forecast_windows,
    mase_scale,
    metrics,
    observed_cells,
    pooled,
    targets_after,
    window_losses,
)
from . import tracking
from .assessment import CandidateReport


@dataclass
class ChampionScore:
    version: int
    test: dict | None  # its scores on the comparison windows
    comparable: bool
    reason: str = ""
    trained_until: str | None = None  # the last row it was trained or selected on (None: not recorded)
    windows: int = 0  # comparison windows: test origins after trained_until
    starts: list[int] = field(default_factory=list, repr=False)
    losses: list[float] = field(default_factory=list, repr=False)


# windows forecast at once for the per-window losses: a multiple of forecast_windows' batch (the model sees the same
# batches as with every window at once, so the same forecasts); (n, H, T) of every test window is GBs for a panel
LOSS_PART = 1 << 16


def losses_by_part(ws: WindowSet, starts: np.ndarray, forecast, part: int = LOSS_PART) -> tuple[np.ndarray, bool]:
    """Each window's loss (window_losses) of the forecasts `forecast(starts) -> (n, H, T)`, made `part` windows at a
    time, and whether every forecast was finite (a baseline that reads into a series' break is not)."""
    out, finite = np.empty(len(starts), np.float64), True
    for i in range(0, len(starts), part):
        s = starts[i : i + part]
        pred = forecast(s)
        finite = finite and bool(np.isfinite(pred).all())
        out[i : i + len(s)] = window_losses(ws, s, pred)
    return out, finite


def trained_until(metadata: dict, tags: dict) -> str | None:
    """The last row a registered model saw in training or selection: from its ONNX metadata, else its tags."""
    split = metadata.get("split_times") or {}
    return (split.get("val") or [None, None])[1] or tags.get("val_end") or None


def score_champion(model_name: str, ws: WindowSet, starts=None) -> ChampionScore | None:
    """The current champion re-scored by ONNX Runtime on the test origins `starts` (default: every test
    window, stride 1) that lie after every row it trained on (it may have been trained on newer data)."""
    from ..engine.inference import OnnxForecaster

    info = tracking.get_alias(model_name, "champion")
    if info is None:
        return None
    try:
        path, info = tracking.download_model(model_name, "champion")
        eng = OnnxForecaster.from_path(path, device="cpu")
    except CellcastError as e:
        return ChampionScore(info.version, None, False, f"champion v{info.version} could not be loaded: {e}")
    if eng.variables != ws.meta.variables or eng.horizon != ws.meta.horizon or eng.lookback > ws.meta.lookback:
        return ChampionScore(
            info.version,
            None,
            False,
            f"champion v{info.version} is not comparable (variables {eng.variables}, horizon "
            f"{eng.horizon}, lookback {eng.lookback} vs {ws.meta.variables}, {ws.meta.horizon}, "
            f"{ws.meta.lookback})",
        )
    try:  # the champion's own known-future columns (it may read another calendar than the candidates)
        table = ws.future_table_for(eng.future_names, eng.future_kinds, eng.calendar) if eng.future_name else None
    except ValueError as e:
        return ChampionScore(info.version, None, False, f"champion v{info.version} is not comparable: {e}")
    until = trained_until(eng.metadata, info.tags)
    starts = ws.starts["test"] if starts is None else np.asarray(starts)
    if until is not None:
        starts = starts[targets_after(ws, starts, until)]
    if not len(starts):
        return ChampionScore(info.version, None, True, "", until, 0)
    parts = []  # each part's metrics, pooled below

    def forecast(at: np.ndarray) -> np.ndarray:
        pred, _ = forecast_windows(  # the champion's own known-future block, or none when it reads none
            lambda xb, fb: (eng.predict(xb, fb if table is not None else None), None), ws, at, table=table
        )
        mask = ws.target_mask(at)
        parts.append((metrics(ws.targets(at), pred, mase_scale(ws), mask), observed_cells(ws, at, mask)))
        return pred

    losses, _ = losses_by_part(ws, starts, forecast)  # a part at a time: the same forecasts as all at once
    reason = "" if until else f"champion v{info.version}'s training rows are not recorded: scored on every test window"
    return ChampionScore(
        info.version,
        pooled(parts),
        True,
        reason,
        until,
        len(starts),
        [int(s) for s in starts],
        losses.tolist(),
    )


def same_as_champion(model_name: str, best: CandidateReport, tags: dict) -> int | None:
    """The champion's version when it was trained from the same data, params and committed code as `best`
    (the project's commit and cellcast's own code: an upgrade of cellcast is new code too)."""
    champ = tracking.get_alias(model_name, "champion")
    commit = tags.get("git_commit", "unknown")
    if champ is None or commit == "unknown" or commit.endswith("-dirty"):
        return None
    keys = ("data_md5", "params_hash", "git_commit", "code_version")
    if all(champ.tags.get(k) == tags.get(k) for k in keys) and champ.tags.get("candidate") == best.name:
        return champ.version
    return None


def champ_dict(c: ChampionScore | None) -> dict | None:
    return {k: v for k, v in asdict(c).items() if k not in ("starts", "losses")} if c else None
