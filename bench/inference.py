"""Inference benchmark: ONNX Runtime vs PyTorch eager, same model and inputs, per cell.

Single-forecast latency (p50, p99 of batch 1) and batch throughput (windows/s at --batch, default 1024).
Default model: 2 layers x 128 units, lookback 168 read in full, 7 variables, horizon 24 (the anchor
measurement's size, /work/shared/bench/anchor_gpu.py). CPU with --threads (default 2); CUDA too when
ONNX Runtime and torch see a GPU. Prints one JSON line per measurement, then a markdown table. Engines alternate over
--rounds rounds and the best round is kept (latency: lowest p50/p99; throughput: highest), which damps other load.

    .venv/bin/python bench/inference.py [--cells rnn lstm gru] [--threads 2] [--budget 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cellcast.pipeline.engine.inference import CUDA, OnnxForecaster  # noqa: E402
from cellcast.pipeline.engine.onnx_export import DEFAULT_VARIANT, VARIANTS, check_parity, export_onnx  # noqa: E402
from cellcast.pipeline.modeling.device import exact_fp32  # noqa: E402
from cellcast.pipeline.modeling.model import ModelSpec, build  # noqa: E402


def emit(**kw):
    print(json.dumps(kw), flush=True)
    return kw


def latency(fn, n: int, warm: int = 20) -> tuple[float, float]:
    for _ in range(warm):
        fn()
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return 1e3 * float(np.percentile(t, 50)), 1e3 * float(np.percentile(t, 99))


def throughput(fn, batch: int, budget: float) -> float:
    fn()  # warm-up: allocations, thread pools
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < budget:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def series(n_vars: int, rows: int) -> np.ndarray:
    """A smooth daily + weekly series with noise, in the units a model would see."""
    t = np.arange(rows)[:, None]
    rng = np.random.default_rng(0)
    x = 10 + 3 * np.sin(2 * np.pi * t / 24) + np.sin(2 * np.pi * t / 168) + 0.3 * rng.standard_normal((rows, n_vars))
    return x.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--budget", type=float, default=3.0, help="seconds per throughput measurement")
    ap.add_argument("--n-latency", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best round is reported")
    ap.add_argument("--lookback", type=int, default=168)
    ap.add_argument("--horizon", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vars", type=int, default=7)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    gpu = torch.cuda.is_available()
    if gpu:
        exact_fp32("cuda")  # torch on the GPU without TF32, like ONNX Runtime's CUDA sessions: same arithmetic
    emit(
        kind="env",
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        python=platform.python_version(),
        torch=torch.__version__,
        cpu=platform.processor() or platform.machine(),
        threads=args.threads,
        gpu=torch.cuda.get_device_name() if gpu else None,
        command=" ".join(sys.argv),
    )
    data = series(args.vars, 20_000)
    starts = np.random.default_rng(1).integers(0, len(data) - args.lookback, args.batch)
    xb = np.stack([data[s : s + args.lookback] for s in starts])
    x1 = xb[:1].copy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cell in args.cells:
            spec = ModelSpec(
                cell=cell,
                n_vars=args.vars,
                target_idx=[0],
                lookback=args.lookback,
                horizon=args.horizon,
                hidden_size=args.hidden,
                num_layers=args.layers,
                rnn_steps=args.lookback,
                mean=data.mean(0).tolist(),
                std=data.std(0).tolist(),
            )
            torch.manual_seed(0)
            model = build(spec).eval()
            path = export_onnx(model, Path(tmp) / f"{cell}.onnx", {"variables": [f"v{i}" for i in range(args.vars)]})
            parity = check_parity(model, path, xb[:256])
            engines = [("torch-cpu", None)]
            engines.append(("ort-cpu", OnnxForecaster.from_path(path, device="cpu", threads=args.threads)))
            # the other export variants beside the default one (pipeline.onnx_export.VARIANTS)
            for variant in VARIANTS:
                if variant != DEFAULT_VARIANT[cell]:
                    other = export_onnx(model, Path(tmp) / f"{cell}-{variant}.onnx", {}, variant=variant)
                    engines.append(
                        (f"ort-cpu-{variant}", OnnxForecaster.from_path(other, device="cpu", threads=args.threads))
                    )
            if gpu:
                engines.append(("torch-cuda", "cuda"))
                ort_gpu = OnnxForecaster.from_path(path, device="cuda", cpu_batch_threshold=0)
                if ort_gpu.provider == CUDA:
                    engines.append(("ort-cuda", ort_gpu))
                    engines.append(("ort-policy", OnnxForecaster.from_path(path, device="cuda", threads=args.threads)))
            # engines alternate within rounds and each keeps its best round: on a shared machine the
            # best of a few interleaved rounds is the figure least distorted by other load
            fns = {}
            for name, eng in engines:
                if isinstance(eng, OnnxForecaster):
                    fns[name] = ((lambda e=eng: e.predict(x1)), (lambda e=eng: e.predict(xb)))
                else:
                    dev = eng or "cpu"
                    m = model.to(dev) if dev == "cpu" else copy.deepcopy(model).to(dev)
                    t1, tb = torch.from_numpy(x1).to(dev), torch.from_numpy(xb).to(dev)
                    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

                    def run(m=m, t=None, sync=sync):
                        with torch.inference_mode():
                            m(t).cpu()
                        sync()

                    fns[name] = ((lambda r=run, t=t1: r(t=t)), (lambda r=run, t=tb: r(t=t)))
            best = {name: {"p50": [], "p99": [], "tput": []} for name in fns}
            for _ in range(args.rounds):
                for name, (f1, fb) in fns.items():
                    p50, p99 = latency(f1, args.n_latency // args.rounds)
                    best[name]["p50"].append(p50)
                    best[name]["p99"].append(p99)
                    best[name]["tput"].append(throughput(fb, args.batch, args.budget / args.rounds))
            for name, eng in engines:
                b = best[name]
                extra = {}
                if isinstance(eng, OnnxForecaster):
                    extra = {"provider": eng.provider, "cpu_batch_threshold": eng.cpu_batch_threshold}
                rows.append(
                    emit(
                        kind="infer",
                        cell=cell,
                        engine=name,
                        p50_ms=round(min(b["p50"]), 3),
                        p99_ms=round(min(b["p99"]), 3),
                        batch=args.batch,
                        windows_per_s=round(max(b["tput"])),
                        windows_per_s_rounds=[round(v) for v in b["tput"]],
                        export=eng.metadata.get("export") if isinstance(eng, OnnxForecaster) else None,
                        parity_rel=parity.max_rel_to_scale,
                        **extra,
                    )
                )
            model.to("cpu")

    print()
    print(f"| cell | engine | p50 ms (batch 1) | p99 ms | windows/s (batch {args.batch}) | vs torch same device |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        base = next(
            b
            for b in rows
            if b["cell"] == r["cell"]
            and b["engine"]
            == ("torch-cuda" if r["engine"] in ("torch-cuda", "ort-cuda", "ort-policy") else "torch-cpu")
        )
        print(
            f"| {r['cell']} | {r['engine']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['windows_per_s']:,} | "
            f"{r['windows_per_s'] / base['windows_per_s']:.2f}x |"
        )


if __name__ == "__main__":
    main()
