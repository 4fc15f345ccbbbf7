"""Size and power of the promotion test on synthetic loss series (pure numpy: no data, no training).

For each scenario (a frequency, a horizon, a test span, an error structure) it draws, per trial, the errors of two
forecasters at every (origin, step) of the test split, scores each window (mean absolute error over its h steps,
MASE-like) and asks each test whether the candidate beats the rival:

  today        the windows a horizon apart only (12 for 12 days of half-hourly data, h = 48), Newey-West's
               automatic lag, HLN with h = 1, Student's t with n - 1 degrees of freedom (the policy before)
  every_origin every window (stride 1), HAC lag max(h - 1, Newey-West), HLN with h, t with (windows a horizon
               apart - 1) degrees of freedom (promotion.dm_test: the policy now)
  hln_n-1      the same statistic read against t with n - 1 (HLN's own reading, counting overlapping windows as
               independent): shown to say why the policy does not
  block_bootstrap_2h  every window, a moving-block bootstrap of the mean differential (blocks of 2h windows, 499
               draws): the other sound route, shown for comparison

The error of a forecaster at origin o, step k (target row t = o + k) is s_t * (a E_t + b P_{o,k}):
  E   a target-row error, AR(1) with coefficient `phi` (what persists over rows: a heat wave); the candidate's and
      the rival's share a common part (correlation `rho`: both miss the same surprises)
  P   a path error, (W_t - W_o) / sqrt(k) for a random walk W: the innovations since the origin, shared by
      consecutive origins (an h-step forecast's own error)
  s   a shared scale: a daily cycle and a lognormal "hard day" factor (`day_sd`), or for daily data a persistent
      log-volatility (`vol_phi`)
with a^2 = 1 - origin_share, b^2 = origin_share. Null: the two forecasters' errors have the same law (E[d] = 0
exactly); an alternative multiplies the candidate's errors by (1 - gain): its loss is (1 - gain) x the rival's.

    .venv/bin/python bench/promotion_power.py                       # 200 trials per cell, ~1-2 min on 2 cores
    .venv/bin/python bench/promotion_power.py --trials 50 --quick   # a smoke run, nothing written
    .venv/bin/python bench/promotion_power.py --only monthly        # the scenarios whose name holds "monthly"

Prints JSON lines, then a markdown table; writes bench/results/promotion-power.jsonl (unless --quick).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellcast.pipeline.registry.promotion import dm_test, newey_west_lag  # noqa: E402


@dataclass(frozen=True)
class Scenario:
    name: str
    per_day: int  # rows per day (1: daily data, no intraday cycle)
    horizon: int
    days: int  # test span, in days
    phi: float = 0.9
    rho: float = 0.7
    origin_share: float = 0.5
    day_sd: float = 0.3  # sd of the log "hard day" factor
    vol_phi: float = 0.0  # > 0: the scale is a persistent log-volatility per row instead (daily series)


SCENARIOS = [
    Scenario("half-hourly, 12 days, h 48 (taylor-like)", 48, 48, 12),
    Scenario("half-hourly, 12 days, h 48, persistent", 48, 48, 12, phi=0.98, rho=0.5, day_sd=0.5),
    Scenario("hourly, 14 days, h 24", 24, 24, 14),
    Scenario("daily, 168 days, h 14 (chicago-like)", 1, 14, 168, phi=0.6),
    Scenario("daily, 750 days, h 5, random walk (sp500-like)", 1, 5, 750, phi=0.0, origin_share=0.9, vol_phi=0.98),
    # a short monthly series (17 years, a 30% test split of 61 months): a year ahead leaves 5 paths, half a year 10
    Scenario("monthly, 61 months, h 12 (5 paths)", 1, 12, 61, phi=0.5),
    Scenario("monthly, 61 months, h 6 (10 paths)", 1, 6, 61, phi=0.5),
]


def ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """A stationary AR(1) of unit variance."""
    z = rng.standard_normal(n)
    if phi == 0:
        return z
    z[0] /= math.sqrt(1 - phi**2)  # start in the stationary law
    return lfilter([1.0], [1.0, -phi], z) * math.sqrt(1 - phi**2)


def window_losses(sc: Scenario, gain: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One trial: the candidate's and the rival's loss per window, at every origin of the test span."""
    h, rows = sc.horizon, sc.days * sc.per_day
    n_orig = rows - h + 1
    N = rows + 1
    t = np.arange(N)
    if sc.vol_phi > 0:
        scale = np.exp(sc.day_sd * ar1(N, sc.vol_phi, rng))
    else:
        day = np.exp(sc.day_sd * rng.standard_normal(-(-N // sc.per_day)))
        scale = np.repeat(day, sc.per_day)[:N] * (
            1 + (0.3 * np.sin(2 * np.pi * t / sc.per_day) if sc.per_day > 1 else 0)
        )
    common = ar1(N, sc.phi, rng)
    o = np.arange(n_orig)[:, None]
    k = np.arange(1, h + 1)[None, :]
    a, b = math.sqrt(1 - sc.origin_share), math.sqrt(sc.origin_share)

    def errors() -> np.ndarray:
        e = sc.rho * common + math.sqrt(1 - sc.rho**2) * ar1(N, sc.phi, rng)
        w = np.concatenate([[0.0], np.cumsum(rng.standard_normal(N - 1))])
        path = (w[o + k] - w[o]) / np.sqrt(k)
        return scale[o + k] * (a * e[o + k] + b * path)

    rival = np.abs(errors()).mean(axis=1)
    cand = np.abs(errors() * (1 - gain)).mean(axis=1)
    return cand, rival


def block_bootstrap_p(d: np.ndarray, block: int, rng: np.random.Generator, draws: int = 499) -> float:
    """One-sided p of a moving-block bootstrap of the mean (Kunsch 1989): the share of resampled means, centred on
    the observed one, at or below the observed mean."""
    n = len(d)
    block = max(1, min(block, n))
    e = d - d.mean()
    starts = rng.integers(0, n - block + 1, (draws, -(-n // block)))
    idx = (starts[:, :, None] + np.arange(block)).reshape(draws, -1)[:, :n]
    means = e[idx].mean(axis=1)
    return float((1 + np.sum(means <= d.mean())) / (draws + 1))


def p_values(
    cand: np.ndarray, rival: np.ndarray, h: int, margin: float, rng: np.random.Generator, bootstrap: bool = True
) -> dict[str, float]:
    d = cand - (1 - margin) * rival
    spaced = d[::h]
    n = len(d)
    out = {
        "today": dm_test(spaced, lag=newey_west_lag(len(spaced)), h=1).p_value,
        "every_origin": dm_test(d, h=h).p_value,
        "hln_n-1": dm_test(d, h=h, dof=n - 1).p_value,
    }
    if bootstrap:
        out["block_bootstrap_2h"] = block_bootstrap_p(d, 2 * h, rng)
    return out


def run(
    sc: Scenario,
    gains: list[float],
    trials: int,
    margins: list[float],
    levels: list[float],
    seed: int,
    bootstrap: bool = True,
):
    rows = []
    for gain in gains:
        rng = np.random.default_rng([seed, int(gain * 1000)])
        boot = np.random.default_rng([seed, int(gain * 1000), 1])  # its own stream: the draws stay the same
        hits: dict[tuple, int] = {}
        for _ in range(trials):
            cand, rival = window_losses(sc, gain, rng)
            for margin in margins:
                for test, p in p_values(cand, rival, sc.horizon, margin, boot, bootstrap).items():
                    for level in levels:
                        key = (test, margin, level)
                        hits[key] = hits.get(key, 0) + (p < level)
        for (test, margin, level), k in sorted(hits.items()):
            rows.append(
                {
                    "scenario": sc.name,
                    "gain": gain,
                    "test": test,
                    "margin": margin,
                    "level": level,
                    "promoted": k / trials,
                    "trials": trials,
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--gains", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    ap.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.02])
    ap.add_argument("--levels", type=float, nargs="+", default=[0.05, 0.10])
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--quick", action="store_true", help="print only, write nothing")
    ap.add_argument("--only", default="", help="the scenarios whose name holds this text (default: all)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "promotion-power.jsonl")
    args = ap.parse_args()
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "load": round(os.getloadavg()[0], 2),
        "seed": args.seed,
    }
    out = []
    for sc in [sc for sc in SCENARIOS if args.only in sc.name]:
        for row in run(sc, args.gains, args.trials, args.margins, args.levels, args.seed):
            row = meta | row | {"params": asdict(sc)}
            out.append(row)
            print(json.dumps(row))
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as fh:
            for row in out:
                fh.write(json.dumps(row) + "\n")
    print(table(out))


def table(rows: list[dict]) -> str:
    """Per scenario: the null's promotion rate at margin 0 (the size) and the promotion rate with the policy's margin
    (0.02) per gain, for each test at each level."""
    tests = list(dict.fromkeys(r["test"] for r in rows))
    gains = sorted({r["gain"] for r in rows})
    idx = {(r["scenario"], r["test"], r["margin"], r["level"], r["gain"]): r["promoted"] for r in rows}
    lines = [
        "| scenario | test | level | size (gain 0, margin 0) | "
        + " | ".join(f"gain {100 * g:.0f}%, margin 2%" for g in gains)
        + " |",
        "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in gains) + " |",
    ]
    for sc in dict.fromkeys(r["scenario"] for r in rows):
        for level in sorted({r["level"] for r in rows}):
            for test in tests:
                size = idx.get((sc, test, 0.0, level, 0.0))
                cells = [idx.get((sc, test, 0.02, level, g)) for g in gains]
                lines.append(
                    f"| {sc} | {test} | {level:g} | {_pct(size)} | " + " | ".join(_pct(c) for c in cells) + " |"
                )
    return "\n".join(lines)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


if __name__ == "__main__":
    main()
