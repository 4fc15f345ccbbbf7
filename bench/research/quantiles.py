"""Intervals for the best point model: conformal residual quantiles per horizon step vs quantile heads (pinball).

    PYTHONPATH=$PWD .venv/bin/python bench/research/quantiles.py --dataset chicago --set anchor=linear ...

(a) conformal: the point model (MAE) is trained as experiment.py does; its residuals y - yhat on every
    validation window give, per horizon step, the empirical quantiles at 5/10/90/95% (finite-sample rank
    ceil((n+1)q)); the interval is yhat + those offsets.
(b) quantile heads: the same configuration whose head forecasts 5/10/50/90/95% (pinball loss), median as point.
Scored on the test split (stride 1, every window; and every horizon): empirical coverage of the 80% and 90%
intervals, mean width in MASE units (width / the MASE scale), the Winkler score, crossing rate.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import experiment  # noqa: E402
import harness  # noqa: E402
import proto  # noqa: E402

LEVELS = (0.05, 0.1, 0.5, 0.9, 0.95)


def interval_scores(y, lo, hi, alpha, scale) -> dict:
    cover = ((y >= lo) & (y <= hi)).mean()
    width = (hi - lo) / scale
    pen = (2 / alpha) * (np.maximum(lo - y, 0) + np.maximum(y - hi, 0)) / scale
    return {
        "coverage": float(cover),
        "width_mase": float(width.mean()),
        "winkler_mase": float((width + pen).mean()),
        "coverage_by_step": ((y >= lo) & (y <= hi)).mean(axis=(0, 2)).round(3).tolist(),
    }


def conformal_offsets(resid: np.ndarray, q: float) -> np.ndarray:
    """Per step and target: the finite-sample conformal quantile of residuals (n, H, T)."""
    n = resid.shape[0]
    k = min(max(int(np.ceil((n + 1) * q)) - 1, 0), n - 1) if q >= 0.5 else max(int(np.floor((n + 1) * q)) - 1, 0)
    return np.sort(resid, axis=0)[k]


def evaluate(d: harness.Data, qpred: dict[float, np.ndarray], starts: np.ndarray) -> dict:
    y = d.targets(starts)
    s = d.mase_scale()
    out = {
        "80": interval_scores(y, qpred[0.1], qpred[0.9], 0.2, s),
        "90": interval_scores(y, qpred[0.05], qpred[0.95], 0.1, s),
    }
    stack = np.stack([qpred[q] for q in LEVELS], -1)
    out["crossing_rate"] = float((np.diff(stack, axis=-1) < 0).any(-1).mean())
    out["median_mase"] = d.score(qpred[0.5], starts)["mase"]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="chicago")
    ap.add_argument("--tag", default="q")
    ap.add_argument("--set", nargs="*", default=[])
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    cfg = {**experiment.DEFAULTS, **experiment.parse_sets(a.set)}
    d = harness.Data(a.dataset)
    # (a) the point model + conformal offsets from its validation residuals
    out = experiment.run(a.dataset, cfg, f"{a.tag}-point", "quantiles-models.jsonl")
    model, ser = out["members"][0], out["series"]
    va = ser.origins("val")
    _, yv, _ = ser.batch(va)
    resid = yv - proto.predict(model, ser, va)
    rows = {}
    for stride in ("horizon", 1):
        starts = d.starts_for("test", stride)
        point = proto.predict(model, ser, d.origins(starts))
        qpred = {q: point + (conformal_offsets(resid, q) if q != 0.5 else 0) for q in LEVELS}
        rows[f"conformal_stride_{stride}"] = evaluate(d, qpred, starts)
    # (b) quantile heads, pinball loss
    qm = experiment.build(d, ser, cfg, cfg["cells"].split(",")[0])
    qm.spec.quantiles = list(LEVELS)
    qm = proto.ProtoForecaster(qm.spec)
    if cfg["anchor"] == "linear":
        proto.fit_linear_anchor(qm, ser)
    res = proto.train(
        qm,
        ser,
        proto.TrainCfg(
            epochs=cfg["epochs"],
            batch_size=cfg["batch_size"],
            max_train_windows=cfg["max_train_windows"],
            lr=cfg["lr"],
            patience=cfg["patience"],
            seed=cfg["seed"],
        ),
    )
    for stride in ("horizon", 1):
        starts = d.starts_for("test", stride)
        p = proto.predict(qm, ser, d.origins(starts))  # (n, H, T, Q)
        rows[f"pinball_heads_stride_{stride}"] = evaluate(d, {q: p[..., i] for i, q in enumerate(LEVELS)}, starts)
    row = {
        "dataset": a.dataset,
        "tag": a.tag,
        "cfg": cfg,
        "val_windows": int(len(va)),
        "quantile_model_train_s": res["train_s"],
        "point_train_s": out["rows"][0]["train_s"],
        **rows,
    }
    harness.append("quantiles.jsonl", row)
    for k, v in rows.items():
        print(
            f"{a.dataset} {k:32s} 80%: cov {v['80']['coverage']:.3f} width {v['80']['width_mase']:.2f}  "
            f"90%: cov {v['90']['coverage']:.3f} width {v['90']['width_mase']:.2f}  median MASE {v['median_mase']:.3f} "
            f"crossing {v['crossing_rate']:.3f}"
        )


if __name__ == "__main__":
    main()
