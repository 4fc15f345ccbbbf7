"""Promotion on live evidence: the registry's challenger against its champion on the live forecasts both made
(monitoring/live.py), decided by promotion.decide_live (the training flow's Diebold-Mariano test), recorded on the
challenger and applied under the alias lock like every promotion (registry/tracking.apply_decision)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

from ..catalog import live_dir
from ..config import Settings
from ..registry import promotion
from . import live

log = logging.getLogger(__name__)


@dataclass
class LiveEvidence:
    """What the live log says of one champion and one challenger."""

    champion: str
    challenger: str
    decision: promotion.Decision
    summary: list[dict] = field(default_factory=list)  # live.summary rows
    log: live.LiveLog | None = None


def weigh(
    logged: live.LiveLog,
    actuals: pd.DataFrame,
    targets: list[str],
    champion: str,
    challenger: str,
    scale: live.Scale | None,
    settings: Settings,
    since=None,
) -> LiveEvidence:
    """Score the live log on the actuals and decide (no registry, no files): the evidence `promote_live` records and
    `cellcast monitor` shows. `scale`: the champion's MASE scale, per (series id, target) on a panel (None: the rows
    before the first live origin, each series on its own)."""
    rows = logged.rows
    if scale is None:
        scale = live.data_scale(actuals, targets, rows["origin"].min() if len(rows) else None)
    points = live.score_live(rows, actuals, targets)
    pairs = live.pair_paths(points, champion, challenger, scale)
    summary = live.summary(points, scale, since)
    scored = {r["version"]: r["forecasts"] for r in summary}
    comp, window = live.comparison(pairs, champion, live.grid_step(actuals)) if len(pairs) else (None, {})
    decision = promotion.decide_live(
        challenger,
        champion,
        comp,
        window,
        scored=(scored.get(challenger, 0), scored.get(champion, 0)),
        min_forecasts=settings.monitor.live_min_forecasts,
        significance=settings.evaluate.significance,
    )
    return LiveEvidence(champion, challenger, decision, summary, logged)


@dataclass
class LivePromotion:
    promoted: bool
    line: str  # one line for the user: the decision or the refusal
    champion_before: int | None
    challenger: int | None
    champion_after: int | None
    decision: promotion.Decision | None = None


def promote_live(settings: Settings) -> LivePromotion:
    """Decide the registry's challenger against its champion on the live log; a tested decision (promoted, or not
    significantly better) is written on the challenger (tags promotion.*, the decision on the test split it had
    kept as promotion.split_decision / split_reason) and applied under the alias lock; a refusal for lack of
    evidence (no challenger, too few pairs) changes nothing."""
    from ..engine.inference import OnnxForecaster
    from ..registry import tracking

    model = settings.model_name
    tracking.end_undecided(model)
    champ = tracking.get_alias(model, tracking.CHAMPION)
    chall = tracking.get_alias(model, tracking.CHALLENGER)
    before = champ.version if champ is not None else None
    if chall is None or champ is None or chall.version == champ.version:
        what = (
            "no champion to compare it with (a first champion is decided on the test split: `cellcast train`)"
            if champ is None and chall is not None
            else f"no challenger: {'the challenger is champion v' + str(before) if chall else 'none registered'}"
        )
        return LivePromotion(False, f"{model}: not promoted: {what}", before, chall.version if chall else None, before)
    path, _ = tracking.download_model(model, champ.version)
    scale = live.champion_scale(OnnxForecaster.from_path(path, device="cpu").metadata)
    logged = live.read_live(live_dir(settings))
    targets = live.target_columns(logged.rows)
    actuals = live.read_actuals(settings, targets)
    ev = weigh(logged, actuals, targets, str(champ.version), str(chall.version), scale, settings)
    d = ev.decision
    if "champion_p_value" not in d.metrics:  # no test was run: nothing to record
        return LivePromotion(False, f"{model}: {d.reason}", before, chall.version, before, d)
    keep = {}
    if "promotion.split_decision" not in chall.tags and "promotion.decision" in chall.tags:
        keep = {
            "promotion.split_decision": chall.tags["promotion.decision"],
            "promotion.split_reason": chall.tags.get("promotion.reason", ""),
        }
    if keep:
        tracking.set_version_tags(model, chall.version, keep)
    applied = tracking.apply_decision(model, chall.version, d, expected_champion=champ.version)
    promoted = applied.tags.get("promotion.decision") == "promoted"
    after = tracking.get_alias(model, tracking.CHAMPION)
    line = (
        f"{model}: champion v{before} -> v{chall.version}: {d.reason}"
        if promoted
        else f"{model}: " + applied.tags["promotion.reason"]
    )
    return LivePromotion(promoted, line, before, chall.version, after.version if after else None, d)
