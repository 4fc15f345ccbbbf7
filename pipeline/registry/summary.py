"""What a training run found, as the text `cellcast run` prints (candidates, baselines, references, the
decision) and as the summary file DVC and the corpus read."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..catalog import train_summary_path
from ..config import Settings
from ..modeling import panel_eval
from .promotion_run import Outcome
from .results import text_table


def summary_table(outcome: Outcome) -> str:
    """The table `cellcast run` prints: candidates, metrics, baselines and the promotion decision."""
    rows = outcome.rows()
    lines = text_table(rows)
    d = outcome.decision
    verdict = "PROMOTED to champion" if d.get("promote") else "not promoted"
    registered = f"{outcome.model_name} v{outcome.version}" if outcome.version else "nothing"
    anchor = next((c.get("anchor") for c in outcome.candidates if c.get("anchor")), None)
    if anchor:
        vals = ", ".join(f"{k} {v:.3f}" for k, v in (anchor.get("val_mase") or {}).items())
        lines += [
            "",
            f"anchor: {anchor['kind']}"
            + (f" (validation MASE: {vals})" if vals else "")
            + (f"; {anchor['reason']}" if anchor.get("reason") else ""),
        ]
    cal = next((c.get("calibration") for c in outcome.candidates if c.get("calibration")), None)
    if cal and cal.get("windows"):
        mode = cal["method"].rsplit("; ", 1)[-1].rstrip(")")
        walked = f" and walk-forward on {cal['test_windows']} test windows" if cal.get("test_windows") else ""
        lines.append(
            f"quantiles conformalised on {cal['windows']} validation windows{walked} "
            f"({cal.get('first_target')} .. {cal.get('last_target')}; {mode})"
        )
    elif cal:
        lines.append(f"quantiles: {cal['method']} (evaluate.calibration)")
    panel = [c for c in outcome.candidates if (c.get("panel") or {}).get("aggregate")]
    if panel:
        lines.append(
            "a panel: each series scaled by its own one-step naive error, so MAE above is MASE (sMAPE is of "
            "scaled values)"
        )
    for c in panel:
        lines.append(f"per series, {c['name']}: {panel_eval.describe(c['panel']['aggregate'])}")
    lines += reference_lines(outcome)
    lines += [
        "",
        f"best candidate: {outcome.best or '-'}  registered: {registered}",
        f"decision: {verdict}: {d.get('reason')}",
        f"champion now: {('v' + str(outcome.champion_after)) if outcome.champion_after else 'none'}",
    ]
    return "\n".join(lines)


def reference_lines(outcome: Outcome) -> list[str]:
    """The classical references beside the best candidate and the bar, on the promotion's test origins."""
    refs = outcome.references or {}
    if not refs:
        return []
    d = outcome.decision.get("metrics") or {}
    first = next(iter(refs.values()))
    if "series_total" in first:  # a panel: per series, aggregated
        from ..modeling import panel_references

        return [
            "",
            "references per series (statsmodels, each series' own units, fitted before its first test origin and "
            "rolled forward over its origins a horizon apart; evidence, not the bar):",
            *(f"  {panel_references.describe(name, row)}" for name, row in refs.items()),
        ]
    n = first.get("windows")
    if not n:
        return ["", f"references ({', '.join(refs)}): {first['status']}"]
    out = [
        "",
        f"references (statsmodels, fitted before the first of the {n} promotion origins, a horizon apart, and "
        f"rolled forward; evidence, not the bar):",
    ]
    for name, row in refs.items():
        out.append(
            f"  {name:6s} "
            + (
                f"test MASE {row['mase']:.3f}  sMAPE {row['smape']:.2f}  "
                f"({row['seconds']:.0f}s, {row.get('fits')} fits)"
                if "mase" in row
                else row["status"]
            )
        )
    cand, bar = (
        d.get("candidate_mase_spaced", d.get("candidate_mase")),
        d.get("baseline_mase_spaced", d.get("baseline_mase")),
    )
    if cand is not None:
        out.append(f"  on the same origins: {outcome.best} {cand:.3f}, bar {d.get('baseline_name')} {bar:.3f}")
    return out


def write_summary(outcome: Outcome, settings: Settings) -> Path:
    path = train_summary_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(outcome), indent=2, default=str))
    return path
