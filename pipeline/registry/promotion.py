"""The promotion policy, as a pure function: no MLflow, no I/O.

A candidate becomes champion only if it beats the strongest baseline by the configured margin
(a model that cannot beat seasonal naive should not serve) AND beats the current champion
(never replace a better model), AND its ONNX export passed the parity gate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Decision:
    promote: bool
    reason: str
    metrics: dict = field(default_factory=dict)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def decide(candidate: float, best_baseline: float, baseline_name: str, margin: float,
           champion: float | None = None, metric: str = "mase", parity_ok: bool = True,
           candidate_name: str = "candidate", champion_version: int | None = None) -> Decision:
    """Promote iff parity_ok and candidate <= best_baseline * (1 - margin) and (no champion or candidate < champion).

    Lower is better for `metric`. The reason is one sentence with the numbers compared."""
    m = metric.upper()
    metrics = {f"candidate_{metric}": candidate, f"baseline_{metric}": best_baseline,
               "baseline_name": baseline_name, "margin": margin, f"champion_{metric}": champion}
    if champion_version is not None:
        metrics["champion_version"] = champion_version
    champ_label = f"champion v{champion_version}" if champion_version is not None else "champion"

    if not parity_ok:
        return Decision(False, f"{candidate_name} not promoted: its ONNX export failed the parity check "
                               f"against PyTorch", metrics)
    if not math.isfinite(candidate):
        return Decision(False, f"{candidate_name} {m} is {candidate}: not a usable score", metrics)

    threshold = best_baseline * (1 - margin)
    gain = (1 - candidate / best_baseline) * 100 if best_baseline > 0 else float("nan")
    metrics[f"{metric}_gain_pct"] = round(gain, 2) if math.isfinite(gain) else None
    margin_txt = f"margin {margin * 100:.3g}%"
    if not candidate <= threshold:
        if candidate < best_baseline:
            how = f"beats {baseline_name} {_fmt(best_baseline)} by only {gain:.1f}% ({margin_txt})"
        else:
            how = f"does not beat {baseline_name} {_fmt(best_baseline)}"
        suffix = "" if champion is not None else ": no champion"
        return Decision(False, f"{candidate_name} {m} {_fmt(candidate)} {how}{suffix}", metrics)

    beat = f"{candidate_name} {m} {_fmt(candidate)} beats {baseline_name} {_fmt(best_baseline)} by {gain:.1f}% ({margin_txt})"
    if champion is None:
        return Decision(True, f"{beat}; no champion yet", metrics)
    if candidate < champion:
        return Decision(True, f"{beat} and {champ_label} {_fmt(champion)}", metrics)
    return Decision(False, f"{beat} but not {champ_label} {_fmt(champion)}: champion unchanged", metrics)
