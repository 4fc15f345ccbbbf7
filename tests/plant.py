"""The small hourly series 'plant' several tests ingest: load (kw, a daily cycle on a random walk) and temperature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def write_plant_csv(path: Path, n: int = 1200) -> Path:
    """`when,kw,temp`, hourly from 2024-03-01, the same numbers for the same n."""
    rng = np.random.default_rng(0)
    t = np.arange(n)
    pd.DataFrame(
        {
            "when": pd.date_range("2024-03-01", periods=n, freq="h").strftime("%Y-%m-%d %H:%M"),
            "kw": 50 + 10 * np.sin(2 * np.pi * t / 24) + np.cumsum(rng.standard_normal(n)),
            "temp": 15 + 5 * np.sin(2 * np.pi * t / 24 + 1),
        }
    ).to_csv(path, index=False)
    return path
