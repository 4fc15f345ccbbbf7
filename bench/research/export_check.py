"""Export a prototype (single cell or ensemble) with the TorchScript exporter and check ONNX Runtime parity
on real test windows.

    PYTHONPATH=$PWD .venv/bin/python bench/research/export_check.py --dataset elecdemand --set ... [--cells gru,lstm,rnn]

Trains the configuration (as experiment.py does), exports it with torch.onnx.export(dynamo=False,
opset_version=17, dynamic batch), runs it through onnxruntime (CPU provider) on every test window, and
records the largest difference relative to the target's scale, node count and the ops used.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import experiment  # noqa: E402
import harness  # noqa: E402
import proto  # noqa: E402


def export(model: torch.nn.Module, ser: proto.Series, path: Path) -> dict:
    orig = ser.origins("test")[:4]
    x, _, f = ser.batch(orig)
    args = (torch.from_numpy(x),) + ((torch.from_numpy(f),) if f is not None else ())
    names = ["x"] + (["future"] if f is not None else [])
    dyn = {n: {0: "batch"} for n in names} | {"forecast": {0: "batch"}}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            args,
            str(path),
            input_names=names,
            output_names=["forecast"],
            dynamic_axes=dyn,
            opset_version=17,
            dynamo=False,
        )
    return {"export_s": round(time.perf_counter() - t0, 2), "inputs": names}


def parity(model: torch.nn.Module, ser: proto.Series, path: Path) -> dict:
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    orig = ser.origins("test")
    worst, n = 0.0, 0
    scale = model.spec.std[ser.target_idx[0]] if hasattr(model, "spec") else 1.0
    for i in range(0, len(orig), 1024):
        x, _, f = ser.batch(orig[i : i + 1024])
        feed = {"x": np.ascontiguousarray(x)} | ({"future": np.ascontiguousarray(f)} if f is not None else {})
        got = sess.run(None, feed)[0]
        with torch.inference_mode():
            ref = model(torch.from_numpy(feed["x"]), None if f is None else torch.from_numpy(feed["future"])).numpy()
        worst = max(worst, float(np.abs(got - ref).max()))
        n += len(x)
    g = onnx.load(str(path)).graph
    ops = collections.Counter(node.op_type for node in g.node)
    return {
        "max_abs_diff": worst,
        "max_diff_rel_scale": worst / scale,
        "windows": n,
        "nodes": len(g.node),
        "ops": dict(ops.most_common()),
        "provider": sess.get_providers()[0],
        "bytes": path.stat().st_size,
    }


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="elecdemand")
    ap.add_argument("--tag", default="export")
    ap.add_argument("--set", nargs="*", default=[])
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    cfg = {**experiment.DEFAULTS, **experiment.parse_sets(a.set)}
    out = experiment.run(a.dataset, cfg, a.tag, "export.jsonl")
    members = out["members"]
    model = members[0] if len(members) == 1 else proto.Ensemble(members)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        row = {
            "dataset": a.dataset,
            "tag": a.tag,
            "cfg": cfg,
            "members": len(members),
            **export(model, out["series"], path),
            **parity(model, out["series"], path),
        }
    harness.append("export.jsonl", {"export": row})
    print({k: v for k, v in row.items() if k != "cfg"})


if __name__ == "__main__":
    main()
