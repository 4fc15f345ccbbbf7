"""`cellcast monitor NAME`: the monitor's current state as text."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import numpy as np

from ..config import Settings
from ..errors import NotFoundError
from .state import read_state, state_path
from .verdict import Thresholds, _iso, _parse, psi_basis, psi_limit, residual_limit

log = logging.getLogger(__name__)


def status(settings: Settings, now: datetime | None = None, aliases: dict[str, str | None] | None = None) -> str:
    """The monitor's current state as text: last scores, drift, thresholds, last trigger, cooldown. `aliases`: the
    registry's champion and challenger versions now (None: the live log's last roles stand in for them)."""
    name = settings.dataset
    state = read_state(settings)
    last = state.get("last")
    on_live = live_lines(settings, state, aliases)
    if not last:
        if on_live:
            return "\n".join([f"{name}: the champion's batch forecasts have not been monitored yet", *on_live])
        raise NotFoundError(
            f"{state_path(settings)}: '{name}' has not been monitored yet; the scheduled "
            f"forecast flow (refresh) monitors it after each refresh"
        )
    th = last["thresholds"]
    lines = [
        *_accuracy_lines(last),
        *_drift_lines(last),
        *_verdict_lines(last),
        *_trigger_lines(state, th["cooldown_hours"], now or datetime.now(UTC)),
    ]
    return "\n".join(lines + on_live)


def _num(x, f: str = ".3f") -> str:
    return "-" if x is None else format(x, f)


def _accuracy_lines(last: dict) -> list[str]:
    """Which champion was evaluated on what, and its scores on the actuals: MASE against its test MASE and the
    seasonal naive's, bias, interval coverage."""
    a, th, num = last["accuracy"], last["thresholds"], _num
    lines = [
        f"{last['model_name']}: champion v{last['version']}, evaluation {last['evaluation']} at {last['at']} "
        f"(data until {last['data_until']})",
        f"accuracy: window from {last['window_start']}: {a['points']} points from {a['forecasts']} forecast(s)"
        f" (judged from {th['min_points']})",
    ]
    if not a["points"]:
        return lines
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
    return lines


def _drift_lines(last: dict) -> list[str]:
    """Input drift per variable against the training split (PSI, its seasonal difference, the share outside the
    training bounds) with each limit and its basis; a panel's share of drifting series."""
    th, num = last["thresholds"], _num
    lines = [f"drift: the last {th['drift_rows']} rows vs the training split (reference: {last['reference']})"]
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
        lines += _table(rows)
        lines += bases
    lines.append(
        f"  thresholds: PSI {th['psi']} (and above {th.get('psi_margin', 1.5):g}x the training windows' own), "
        f"outside share {th['outside_share']}"
    )
    if last.get("panel"):
        from .panel import status_lines

        lines += status_lines(last["panel"], last["panel"].get("share_limit"))
    return lines


def _verdict_lines(last: dict) -> list[str]:
    """The verdict, and the breaches short of a retrain."""
    v = last["verdict"]
    lines = [f"verdict: {'RETRAIN: ' if v['retrain'] else ''}{v['reason']}"]
    for b in v["breaches"] if not v["retrain"] else []:
        lines.append(f"  {b}")
    return lines


def _trigger_lines(state: dict, cooldown_hours: float, now: datetime) -> list[str]:
    """The last retrain the monitor triggered and its cooldown at `now`, and the last trigger that failed."""
    trig = state.get("last_trigger")
    if trig:
        until = _parse(trig["at"]) + timedelta(hours=cooldown_hours)
        left = (until - now).total_seconds() / 3600
        lines = [
            f"last retrain trigger: {trig['at']}: flow run {trig.get('flow_run_name', '?')} "
            f"({trig.get('flow_run_id', '?')}) of {trig.get('deployment', '?')}: {trig['reason']}",
            f"cooldown: {cooldown_hours:g} h: " + (f"until {_iso(until)} ({left:.1f} h left)" if left > 0 else "over"),
        ]
        if trig.get("crashed"):
            lines[1] = (
                f"cooldown: none: the retrain's run crashed ({trig['crashed']['state_message']}); the next "
                f"evaluation that still finds a breach starts another"
            )
    else:
        lines = [f"last retrain trigger: none (cooldown {cooldown_hours:g} h after each)"]
    err = state.get("last_trigger_error")
    if err:
        lines.append(f"last trigger error: {err['at']}: {err['error']}")
    return lines


def _table(rows: list[list[str]]) -> list[str]:
    """Rows of cells as indented lines, each column as wide as its widest cell."""
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(x) for c, x in zip(r, w)).rstrip() for r in rows]


def live_lines(settings: Settings, state: dict, aliases: dict[str, str | None] | None = None) -> list[str]:
    """The live log's section of `cellcast monitor`: champion against challenger on the forecasts the service
    answered, scored on the actuals that arrived; [] when nothing is logged. The versions compared are the
    registry's (`aliases`) when given: after a promotion the log's last rows still name the old champion until the
    service answers again, and the promoted version is champion and challenger at once (nothing left to compare)."""
    from ..catalog import live_dir
    from . import live
    from .promote import weigh

    folder = live_dir(settings)
    logged = live.read_live(folder)
    if logged.empty and not logged.untimed:
        return []
    served = live.roles(logged.rows) if not logged.empty else {}
    roles = served if aliases is None else {r: str(v) for r, v in aliases.items() if v is not None}
    champion, challenger = roles.get("champion"), roles.get("challenger")
    if challenger is not None and challenger == champion:
        challenger = None  # promoted: it is the champion now
    lines = _live_header(folder, logged, served if aliases is not None else None, champion, challenger)
    if logged.empty:
        return lines
    targets = live.target_columns(logged.rows)
    try:
        actuals = live.read_actuals(settings, targets)
    except NotFoundError as e:
        return [*lines, f"  not scored: {e}"]
    recorded = state.get("mase_scale") or {}
    # the monitored champion's scale: the registry's champion, or the one the log's rows were answered by
    scale = (
        recorded.get("scale") if str(recorded.get("version")) in {str(champion), str(served.get("champion"))} else None
    )
    step = live.grid_step(actuals)
    window = (state.get("last") or {}).get("thresholds", {}).get("window") or (
        settings.monitor.window if settings.monitor.window != "auto" else 2 * int(logged.rows["step"].max())
    )
    since = actuals["timestamp"].max() - (int(window) - 1) * step if step is not None else None
    ev = weigh(logged, actuals, targets, str(champion or ""), str(challenger or ""), scale, settings, since)
    rows = _live_rows(ev, settings, window, champion, challenger)
    if len(rows) == 1:
        return [*lines, "  no logged forecast has its actual yet"]
    return lines + _table(rows) + _live_footer(settings, ev.decision, scale, champion, challenger)


def _live_header(folder, logged, served: dict | None, champion, challenger) -> list[str]:
    """What the live log holds and which versions it compares; `served` (the log's roles, when the registry's
    aliases name the versions): a line when the champion alias moved since the log's rows were answered."""
    notes = [f"{logged.files} file(s)", f"{len(logged.rows) + logged.untimed} rows"]
    notes += [f"{logged.duplicates} logged twice, counted once"] if logged.duplicates else []
    notes += [f"{len(logged.damaged)} damaged file(s) skipped"] if logged.damaged else []
    notes += [f"{logged.untimed} rows without timestamps not scored"] if logged.untimed else []
    who = " against ".join(f"{r} v{v}" for r, v in (("champion", champion), ("challenger", challenger)) if v)
    lines = [f"live: {folder} ({', '.join(notes)}): {who or 'no version'}, on the actuals that arrived"]
    if served is not None and served.get("champion") not in (None, champion):
        lines.append(f"  the log's rows were answered by champion v{served['champion']}: the alias moved since")
    return lines


def _live_rows(ev, settings: Settings, window, champion, challenger) -> list[list[str]]:
    """The live table: a header, then per version its role, forecasts scored, MASE, rolling MASE, coverage and (the
    challenger) the Diebold-Mariano verdict."""
    d, m = ev.decision, ev.decision.metrics
    if "champion_p_value" in m:
        verdict = f"{'better' if d.promote else 'not better'}: DM {m['champion_dm']:.3g}, p {m['champion_p_value']:.3g}"
    else:
        verdict = f"{m['live_paired']} of {settings.monitor.live_min_forecasts} paired"

    def num(x):
        return "-" if x is None or not np.isfinite(x) else f"{x:.3f}"

    rows = [["version", "role", "forecasts scored", "MASE", f"rolling MASE ({window} steps)", "coverage", "DM verdict"]]
    for r in ev.summary:
        cov = ", ".join(f"{v:.1%} in {k}%" for k, v in sorted(r["coverage"].items(), key=lambda kv: float(kv[0])))
        is_challenger = r["version"] == str(challenger) and r["role"] == "challenger" and champion
        rows.append(
            [
                f"v{r['version']}",
                r["role"],
                str(r["forecasts"]),
                num(r["mase"]),
                num(r["rolling_mase"]),
                cov or "-",
                verdict if is_challenger else "-",
            ]
        )
    return rows


def _live_footer(settings: Settings, decision, scale, champion, challenger) -> list[str]:
    """The live table's basis and, with a challenger beside the champion, what live promotion would do."""
    basis = "the champion's MASE scale" if scale else "MASE scaled by the one-step naive MAE before the first origin"
    lines = [f"  ({basis}; a forecast: one series from one origin)"]
    if challenger and champion:
        rule = "on: the forecast flow applies it" if settings.monitor.live_promotion else "off"
        lines.append(
            f"  live promotion (monitor.live_promotion {rule}; `cellcast promote {settings.dataset} --live` applies it "
            f"now): {decision.reason}"
        )
    return lines
