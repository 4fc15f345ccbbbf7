"""Pictures people would rather look at than read: forecast vs actual, loss curves, error by horizon."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: flows and CI have no display
import matplotlib.pyplot as plt  # noqa: E402  (after matplotlib.use: pyplot takes the backend set then)
import numpy as np  # noqa: E402  (kept with the imports above)


def _tiled(timestamps: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every horizon-th window's forecast laid end to end: (times, values)."""
    h = f.shape[1]
    idx = [i for i in range(0, len(f), h) if i + h <= len(timestamps)]
    return (np.concatenate([timestamps[i : i + h] for i in idx]), np.concatenate([f[i, :h] for i in idx]))


def forecast_vs_actual(
    timestamps: np.ndarray,
    actual: np.ndarray,
    forecasts: dict[str, np.ndarray],
    title: str,
    target: str,
    bands: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
):
    """Test range: the actual series and each forecaster's one-step-ahead-origin forecasts.

    `forecasts[name]` is (n_windows, horizon) for consecutive windows; the picture draws every
    horizon-th window so the curves tile the test range without overlapping. `bands[label]` = (lower,
    upper), each (n_windows, horizon): intervals drawn as shaded bands, widest lightest.
    """
    fig, ax = plt.subplots(figsize=(11, 4))
    for k, (label, (lo, hi)) in enumerate(
        sorted((bands or {}).items(), key=lambda kv: -np.nanmean(kv[1][1] - kv[1][0]))
    ):
        t, lower = _tiled(timestamps, lo)
        _, upper = _tiled(timestamps, hi)
        ax.fill_between(t, lower, upper, color="tab:blue", alpha=0.15 + 0.15 * k, lw=0, label=label)
    ax.plot(timestamps, actual, color="black", lw=1.2, label="actual")
    for name, f in forecasts.items():
        t, v = _tiled(timestamps, f)
        ax.plot(t, v, lw=1, alpha=0.85, label=name)
    ax.set_title(title)
    ax.set_ylabel(target)
    ax.legend(loc="upper right", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def loss_curves(histories: dict[str, list[dict]], title: str):
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, hist in histories.items():
        ep = [r["epoch"] for r in hist]
        (line,) = ax.plot(ep, [r["train_loss"] for r in hist], lw=1, ls="--")
        ax.plot(ep, [r["val_loss"] for r in hist], lw=1.5, color=line.get_color(), label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MAE (scaled): dashed train, solid validation")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def error_by_horizon(by_step: dict[str, list[float]], title: str):
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, err in by_step.items():
        ax.plot(
            np.arange(1, len(err) + 1),
            err,
            lw=1.5 if not name.startswith(("naive", "seasonal")) else 1,
            ls="-" if not name.startswith(("naive", "seasonal")) else ":",
            label=name,
        )
    ax.set_xlabel("horizon step")
    ax.set_ylabel("MASE")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)


def panel_small_multiples(panels: list[dict], title: str, target: str):
    """One small panel per series (e.g. the best, median and worst by MASE): `panels` items hold `label`,
    `timestamps`, `actual` (one value per timestamp) and `forecasts` {name: (n_windows, horizon)} tiled as in
    forecast_vs_actual."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.6 * len(panels)), squeeze=False)
    for ax, p in zip(axes[:, 0], panels):
        ax.plot(p["timestamps"], p["actual"], color="black", lw=1.2, label="actual")
        for name, f in p["forecasts"].items():
            t, v = _tiled(p["timestamps"], f)
            ax.plot(t, v, lw=1, alpha=0.85, label=name)
        ax.set_title(p["label"], fontsize=9)
        ax.set_ylabel(target)
        ax.legend(loc="upper right", fontsize=7)
    fig.suptitle(title)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def mase_distribution(values: dict[str, np.ndarray], title: str):
    """Histogram of the per-series MASE of each forecaster (the model, the strongest baseline per series)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    finite = [np.asarray(v, float)[np.isfinite(v)] for v in values.values()]
    allv = np.concatenate(finite) if finite else np.zeros(0)
    bins = np.linspace(allv.min(), allv.max(), 25).tolist() if len(allv) and allv.max() > allv.min() else 10
    for (name, _), v in zip(values.items(), finite):
        ax.hist(v, bins=bins, alpha=0.5, label=f"{name} (median {np.median(v):.3f})" if len(v) else name)
    ax.set_xlabel("MASE per series")
    ax.set_ylabel("series")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def backtest_errors(folds: list[dict], candidates: list[str], title: str):
    """A backtest (registry/backtest.py FoldRecord dicts): above, each fold's test MASE per candidate beside its
    seasonal-naive bar and the MSTL reference; below, the MASE of every test origin over the whole span (the
    selected candidate, the bar, MSTL), fold boundaries marked."""
    import pandas as pd

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), gridspec_kw={"height_ratios": [1, 1.2]})
    _fold_mase(top, folds, candidates, title)
    for f in folds:
        t = pd.to_datetime(f["origin_times"])
        sel = f["losses"].get("selected")
        if sel is not None:
            bottom.plot(t, sel, color="tab:blue", lw=1, label="selected candidate" if f is folds[0] else None)
        bottom.plot(
            t,
            f["losses"][f["bar"]],
            color="black",
            lw=0.8,
            ls=":",
            label="seasonal naive (bar)" if f is folds[0] else None,
        )
        if "ref_mstl" in f["losses"]:
            bottom.plot(
                t, f["losses"]["ref_mstl"], color="grey", lw=0.8, ls="--", label="MSTL" if f is folds[0] else None
            )
        bottom.axvline(pd.Timestamp(f["times"]["test"][0]), color="red", lw=0.6, alpha=0.5)
    bottom.set_ylabel("MASE of each forecast origin")
    bottom.set_title("error over time: every test origin of every fold (red: a fold's first test row)", fontsize=9)
    bottom.legend(fontsize=7)
    plt.setp(bottom.get_xticklabels(), rotation=25, ha="right")  # not autofmt_xdate: it hides the top axis' folds
    fig.tight_layout()
    return fig


def panel_backtest(folds: list[dict], candidates: list[str], title: str, worst: list[str]):
    """A panel's backtest: above, each fold's pooled test MASE per candidate beside its bar and MSTL (as
    backtest_errors); below, the `worst` series (by the selected candidate's mean MASE), fold by fold: the selected
    candidate (solid) against the fold's bar (dotted) on that series' own origins."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), gridspec_kw={"height_ratios": [1, 1]})
    _fold_mase(top, folds, candidates, title)
    x = np.arange(1, len(folds) + 1)
    for j, sid in enumerate(worst):
        color = f"C{j}"
        sel = [f["series"].get("selected", {}).get(sid, np.nan) for f in folds]
        bar = [f["series"].get(f["bar"], {}).get(sid, np.nan) for f in folds]
        bottom.plot(x, sel, marker="o", color=color, lw=1.3, label=f"{sid}: selected")
        bottom.plot(x, bar, marker="s", color=color, lw=1, ls=":", label=f"{sid}: bar")
    bottom.set_xticks(x, [str(f["fold"]["index"]) for f in folds], fontsize=8)
    bottom.set_xlabel("fold")
    bottom.set_ylabel("test MASE of the series")
    bottom.set_title("the worst series by the selected candidate's mean MASE over the folds", fontsize=9)
    bottom.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def _fold_mase(top, folds: list[dict], candidates: list[str], title: str) -> None:
    """Each fold's test MASE per candidate beside its seasonal-naive bar and the MSTL reference."""
    x = np.arange(1, len(folds) + 1)
    labels = [f"{f['fold']['index']}\n{f['times']['test'][0][:10]}" for f in folds]
    for name in candidates:
        top.plot(x, [f["scores"].get(name, {}).get("mase", np.nan) for f in folds], marker="o", lw=1.3, label=name)
    top.plot(
        x,
        [f["scores"][f["bar"]]["mase"] for f in folds],
        marker="s",
        color="black",
        ls=":",
        lw=1.2,
        label="seasonal naive (each fold's bar: " + ", ".join(sorted({f["bar"] for f in folds})) + ")",
    )
    if any("mase" in f["scores"].get("ref_mstl", {}) for f in folds):
        top.plot(
            x,
            [f["scores"].get("ref_mstl", {}).get("mase", np.nan) for f in folds],
            marker="^",
            color="grey",
            ls="--",
            lw=1.2,
            label="MSTL (reference)",
        )
    top.set_xticks(x, labels, fontsize=8)
    top.set_xlabel("fold (first test day)")
    top.set_ylabel("test MASE")
    top.set_title(title)
    top.legend(fontsize=7, ncol=2)
