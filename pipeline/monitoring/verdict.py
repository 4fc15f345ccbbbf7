"""The thresholds (params.yaml `monitor`, 'auto' resolved for one model) and the verdict: which rule is crossed
and whether a retrain is due, given the cooldown."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from ..config import MonitorConfig
from ..data import drift as drifts

log = logging.getLogger(__name__)


@dataclass
class Thresholds:
    """params.yaml `monitor` with 'auto' resolved for one model."""

    mase_ratio: float | None
    min_points: int
    window: int
    psi: float | None
    psi_bins: int
    drift_rows: int
    outside_share: float | None
    cooldown_hours: float
    psi_margin: float = 1.5


def thresholds(cfg: MonitorConfig, horizon: int, lookback: int) -> Thresholds:
    return Thresholds(
        mase_ratio=cfg.mase_ratio,
        min_points=horizon if cfg.min_points == "auto" else cfg.min_points,
        window=2 * horizon if cfg.window == "auto" else cfg.window,
        psi=cfg.psi,
        psi_bins=cfg.psi_bins,
        drift_rows=drifts.window_rows(cfg.drift_rows, lookback, cfg.psi_bins),
        outside_share=cfg.outside_share,
        cooldown_hours=cfg.cooldown_hours,
        psi_margin=cfg.psi_margin,
    )


@dataclass
class Verdict:
    retrain: bool
    breaches: list[str]  # every threshold crossed now, one line each
    reason: str  # why a retrain is asked for, or why not
    cooldown_until: str | None = None


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse(t: str) -> datetime:
    return datetime.fromisoformat(t.replace("Z", "+00:00"))


def psi_limit(th: Thresholds, d: dict) -> float | None:
    """The PSI above which a variable has drifted: the stated threshold, and no less than `psi_margin` times
    the highest PSI of the training split's own windows of as many rows (a seasonal series strays that far
    from itself). A model whose profile has no `psi_windows`: its `psi_normal` (the max of a few
    non-overlapping windows), without the margin: the limit that profile was recorded with."""
    if not th.psi:
        return None
    if d.get("psi_windows") is not None:
        return max(th.psi, th.psi_margin * d["psi_windows"])
    return max(th.psi, d.get("psi_normal") or 0.0)


def residual_limit(th: Thresholds, d: dict) -> float | None:
    """The same for the seasonal differences (None when the profile has no residual profile for this
    variable and window length)."""
    if not th.psi or d.get("residual_windows") is None:
        return None
    return max(th.psi, th.psi_margin * d["residual_windows"])


def psi_basis(th: Thresholds, d: dict) -> str:
    """How the PSI limit of a variable was set, for the breach line and `cellcast monitor`."""
    if d.get("psi_windows") is not None:
        return f"{th.psi_margin:g}x the highest of the training split's windows of as many rows, {d['psi_windows']:.2f}"
    if d.get("psi_normal") is not None:
        return (
            f"the model's older profile: the highest of its non-overlapping training windows, {d['psi_normal']:.2f}, "
            "no margin, no residual check; a retrained model records the calibrated limits"
        )
    return "no training windows of as many rows: the threshold alone"


def judge(
    acc: dict, drift: dict[str, dict], test_mase: float | None, th: Thresholds, state: dict, now: datetime
) -> Verdict:
    """Retrain when accuracy or drift crosses its threshold, unless a retrain was triggered within the
    cooldown (a storm of retrains would not make the next one better)."""
    breaches = []
    if th.mase_ratio and test_mase and acc["points"] >= th.min_points and np.isfinite(acc["mase"]):
        ratio = acc["mase"] / test_mase
        if ratio > th.mase_ratio:
            breaches.append(
                f"accuracy: rolling MASE {acc['mase']:.3f} on {acc['points']} points is {ratio:.2f}x "
                f"the champion's test MASE {test_mase:.3f} (threshold {th.mase_ratio:g}x)"
            )
    for var, d in drift.items():
        limit = psi_limit(th, d)
        if limit is not None and np.isfinite(d["psi"]) and d["psi"] > limit:
            breaches.append(
                f"drift: {var} PSI {d['psi']:.2f} over the last {d['n']} rows vs the training split "
                f"(limit {limit:.2f}: threshold {th.psi:g}, {psi_basis(th, d)})"
            )
        rlimit = residual_limit(th, d)
        rpsi = d.get("residual_psi")
        if rlimit is not None and rpsi is not None and np.isfinite(rpsi) and rpsi > rlimit:
            breaches.append(
                f"drift: {var} seasonal differences PSI {rpsi:.2f} over the last {d['n']} rows vs the training "
                f"split (limit {rlimit:.2f}: threshold {th.psi:g}, {th.psi_margin:g}x the highest of its windows "
                f"of as many rows, {d['residual_windows']:.2f})"
            )
        if th.outside_share and np.isfinite(d["outside"]) and d["outside"] > th.outside_share:
            lo, hi = d["bounds"]
            breaches.append(
                f"drift: {d['outside']:.1%} of the last {d['n']} {var} values lie outside the trained "
                f"bounds [{lo:.4g}, {hi:.4g}] (threshold {th.outside_share:.1%})"
            )
    if not breaches:
        return Verdict(False, [], "within thresholds")
    held = cooldown(state, th, now)
    if held:
        return Verdict(False, breaches, held[0], held[1])
    return Verdict(True, breaches, "; ".join(breaches))


def cooldown(state: dict, th: Thresholds, now: datetime) -> tuple[str, str] | None:
    """(reason, until) while the last trigger's cooldown holds at `now`, else None. A retrain whose run crashed
    (its process killed: a worker or stack stopped, the machine out of memory) never had its say: it holds no
    cooldown, and the next evaluation that still finds a breach starts another."""
    last = state.get("last_trigger") or {}
    if not last.get("at") or last.get("crashed"):
        return None
    until = _parse(last["at"]) + timedelta(hours=th.cooldown_hours)
    if now >= until:
        return None
    return f"cooldown until {_iso(until)} (retrain triggered at {last['at']})", _iso(until)
