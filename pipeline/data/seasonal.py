"""Seasonal-repeat arithmetic on arrays: the seasonal naive (each horizon step repeats the latest observed value whole
seasons back) and the seasonal median (the step-by-step median of several seasonal naives), with the season sets a
median may take. Pure numpy on positions and values: data/ (panel_windows.seasons_pay, reading a window's lookback)
and modeling/ (evaluate's baselines, the seasonal-median and linear anchors) and monitoring/ call this one
implementation, so a baseline, an anchor and the window stage's choice of seasons agree step for step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def naive_offsets(horizon: int, season: int) -> np.ndarray:
    """(horizon,) int64: for each step h of a horizon whose first step is row r, the row the seasonal naive of `season`
    repeats, relative to r: h - season * (h // season + 1), the latest row one or more whole seasons back that lies
    before r (observed at the origin). In a window's lookback of L rows: position L + offset."""
    h = np.arange(horizon)
    return h - season * (h // season + 1)


def seasonal_median(naives: Sequence[np.ndarray]) -> np.ndarray:
    """The step-by-step median of seasonal naive forecasts of equal shape (an even count: the mean of the middle
    two), in their dtype."""
    return np.median(np.stack(naives), axis=0)


def median_sets(lookback: int, seasons: list[int]) -> list[list[int]]:
    """The season sets a seasonal median may take, each sorted: with M the longest natural season the lookback holds
    twice, the last j seasons (M, 2M, .., jM; j >= 2) and each of those (j >= 1) with the shorter natural seasons
    beside them (a day: yesterday). None where no season fits twice."""
    natural = sorted({int(m) for m in seasons if 1 < m <= lookback})
    twice = [m for m in natural if 2 * m <= lookback]
    if not twice:
        return []
    longest = twice[-1]
    shorter = [m for m in natural if m < longest]
    sets = []
    for j in range(1, lookback // longest + 1):
        last = [longest * i for i in range(1, j + 1)]
        if j >= 2:
            sets.append(last)
        if shorter:
            sets.append(sorted(shorter + last))
    return sets
