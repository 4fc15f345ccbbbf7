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
    """The PSI above which a variable has drifted: the stated threshold, and no less than the training
    split's own windows of as many rows reach (a seasonal series strays that far from itself)."""
    if not th.psi:
        return None
    return max(th.psi, d.get("psi_normal") or 0.0)


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
            normal = d.get("psi_normal")
            breaches.append(
                f"drift: {var} PSI {d['psi']:.2f} over the last {d['n']} rows vs the training split "
                f"(threshold {th.psi:g}"
                + (f"; training windows of as many rows reach {normal:.2f})" if normal is not None else ")")
            )
        if th.outside_share and np.isfinite(d["outside"]) and d["outside"] > th.outside_share:
            lo, hi = d["bounds"]
            breaches.append(
                f"drift: {d['outside']:.1%} of the last {d['n']} {var} values lie outside the trained "
                f"bounds [{lo:.4g}, {hi:.4g}] (threshold {th.outside_share:.1%})"
            )
    if not breaches:
        return Verdict(False, [], "within thresholds")
    last = (state.get("last_trigger") or {}).get("at")
    if last:
        until = _parse(last) + timedelta(hours=th.cooldown_hours)
        if now < until:
            return Verdict(False, breaches, f"cooldown until {_iso(until)} (retrain triggered at {last})", _iso(until))
    return Verdict(True, breaches, "; ".join(breaches))
