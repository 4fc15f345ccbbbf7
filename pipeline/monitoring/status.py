"""`cellcast monitor NAME`: the monitor's current state as text."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from ..config import Settings
from ..errors import NotFoundError
from .state import read_state, state_path
from .verdict import Thresholds, _iso, _parse, psi_basis, psi_limit, residual_limit

log = logging.getLogger(__name__)


def status(name: str, settings: Settings, now: datetime | None = None) -> str:
    """The monitor's current state as text: last scores, drift, thresholds, last trigger, cooldown."""
    state = read_state(name, settings)
    last = state.get("last")
    if not last:
        raise NotFoundError(
            f"{state_path(name, settings)}: '{name}' has not been monitored yet; the scheduled "
            f"forecast flow (refresh) monitors it after each refresh"
        )
    now = now or datetime.now(UTC)
    a, th, v = last["accuracy"], last["thresholds"], last["verdict"]
    num = lambda x, f=".3f": "-" if x is None else format(x, f)  # noqa: E731
    lines = [
        f"{last['model_name']}: champion v{last['version']}, evaluation {last['evaluation']} at {last['at']} "
        f"(data until {last['data_until']})",
        f"accuracy: window from {last['window_start']}: {a['points']} points from {a['forecasts']} forecast(s)"
        f" (judged from {th['min_points']})",
    ]
    if a["points"]:
        lines.append(
            f"  MASE {num(a['mase'])}  champion's test MASE {num(last['test_mase'])}  ratio "
            f"{num(last['mase_ratio'], '.2f')}x  (threshold {th['mase_ratio']}x)"
        )
        lines.append(
            f"  seasonal naive ({last['season']}) on the same points: MASE {num(a['naive_mase'])}, "
            f"the model's relative MASE {num(a['relative_mase'])}"
        )
        bias = ", ".join(f"{k[5:]} {num(x, '+.4g')}" for k, x in a.items() if k.startswith("bias.") and x is not None)
        lines.append(f"  bias (forecast - actual): {bias}  (scaled {num(a['bias_scaled'], '+.3f')})")
        cov = (
            f"{a['coverage']:.1%} inside the {a['coverage_nominal']:.0%} interval"
            if a.get("coverage") is not None
            else "n/a (the forecasts carry no quantiles)"
        )
        lines.append(f"  interval coverage: {cov}")
    lines.append(f"drift: the last {th['drift_rows']} rows vs the training split (reference: {last['reference']})")
    if last["drift"]:
        rows = [
            ["variable", "PSI", "training windows", "limit", "seasonal diff PSI", "limit", "outside bounds", "bounds"]
        ]
        tho = Thresholds(**th)
        bases = []
        for var, d in last["drift"].items():
            b = d.get("bounds")
            limit = psi_limit(tho, d)
            normal = d.get("psi_windows") if d.get("psi_windows") is not None else d.get("psi_normal")
            bases.append(f"  {var}: PSI limit {psi_basis(tho, d)}")
            rows.append(
                [
                    var if "series" not in d else f"{var} (worst: {d['series']})",
                    num(d["psi"], ".3f"),
                    num(normal, ".3f"),
                    num(limit, ".3f"),
                    num(d.get("residual_psi"), ".3f"),
                    num(residual_limit(tho, d), ".3f"),
                    "-" if d["outside"] is None else f"{d['outside']:.1%}",
                    f"[{b[0]:.4g}, {b[1]:.4g}]" if b else "-",
                ]
            )
        w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  " + "  ".join(c.ljust(x) for c, x in zip(r, w)).rstrip() for r in rows]
        lines += bases
    lines.append(
        f"  thresholds: PSI {th['psi']} (and above {th.get('psi_margin', 1.5):g}x the training windows' own), "
        f"outside share {th['outside_share']}"
    )
    if last.get("panel"):
        from .panel import status_lines

        lines += status_lines(last["panel"], last["panel"].get("share_limit"))
    lines.append(f"verdict: {'RETRAIN: ' if v['retrain'] else ''}{v['reason']}")
    for b in v["breaches"] if not v["retrain"] else []:
        lines.append(f"  {b}")
    trig = state.get("last_trigger")
    if trig:
        lines.append(
            f"last retrain trigger: {trig['at']}: flow run {trig.get('flow_run_name', '?')} "
            f"({trig.get('flow_run_id', '?')}) of {trig.get('deployment', '?')}: {trig['reason']}"
        )
        until = _parse(trig["at"]) + timedelta(hours=th["cooldown_hours"])
        left = (until - now).total_seconds() / 3600
        lines.append(
            f"cooldown: {th['cooldown_hours']:g} h: "
            + (f"until {_iso(until)} ({left:.1f} h left)" if left > 0 else "over")
        )
    else:
        lines.append(f"last retrain trigger: none (cooldown {th['cooldown_hours']:g} h after each)")
    err = state.get("last_trigger_error")
    if err:
        lines.append(f"last trigger error: {err['at']}: {err['error']}")
    return "\n".join(lines)
