"""Batch assembly benchmark: the seed tutorial's per-item Dataset vs cellcast's strided-view batches.

Throughput (windows/s) of turning a series into (inputs, targets) batches, nothing else:
  seed-b64         the seed's pattern (seeds/000 section 5.2): a torch Dataset whose __getitem__ slices numpy and
                   builds two tensors per item (`torch.tensor(x)`, `torch.tensor(y)`), DataLoader(batch 64,
                   shuffle=True, num_workers=0)
  seed-b1024       the same Dataset at batch 1024 (the per-item cost does not go away with a bigger batch)
  numpy-bN         cellcast: `WindowSet.batch(starts)` (fancy index on the sliding_window_view) + torch.from_numpy
  torch-bN         cellcast: `TorchWindows.batch(idx)` (torch index on the `unfold` view), as the trainer does
  torch-bN+contig  the same, then `.contiguous()` on the inputs (what a consumer needing dense memory pays)
  *-cuda           with CUDA: the seed's batches copied to the GPU; cellcast's series resident, batches gathered there
Every method walks shuffled epochs over the same windows (same series, lookback, horizon); methods run
round-robin, --repeats times, and the report is the median of each (and of each per-repeat ratio).

Peak memory as the lookback grows: each (dataset, lookback, method) runs in a fresh subprocess that loads the
series, warms the same code path on a tiny series, resets the kernel's high-water mark (/proc/self/clear_refs 5;
the fallback is the ru_maxrss delta) and then builds the windows and assembles --mem-batches batches. The figure
is VmHWM - RSS before: resident memory, so torch's CPU allocations count as well as numpy's. `materialise` is the
precompute alternative (np.stack of every window, inputs and targets); it is skipped, with the size it would need,
above --mem-cap-gb. On CUDA the device figure is torch.cuda.max_memory_allocated.

    .venv/bin/python bench/windows.py [--quick] [--repeats 3] [--budget 2] [--rows 200000] [--lookback 168]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

# Before torch loads OpenMP: on a shared, oversubscribed machine spinning worker threads slowed a 2-thread LSTM
# step up to 80x (20 vs 1583 windows/s); passive waiting keeps the numbers about the code, not the neighbours.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cellcast.pipeline.data.windowset import WindowMeta, WindowSet  # noqa: E402

RESULTS = ROOT / "bench" / "results"


# --- environment and output ----------------------------------------------------------------------


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def machine_tag(threads: int) -> str:
    if torch.cuda.is_available():
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower().replace("nvidia", "")).strip("-")
    return f"cpu{threads}t"


class Out:
    """JSON lines to stdout and (unless quick) to bench/results/<name>-<machine>.jsonl."""

    def __init__(self, path: Path | None):
        self.path = path
        self.fh = None
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = path.open("w")

    def emit(self, **kw) -> dict:
        line = json.dumps(kw)
        print(line, flush=True)
        if self.fh:
            self.fh.write(line + "\n")
            self.fh.flush()
        return kw


def env_row(threads: int, args) -> dict:
    gpu = torch.cuda.is_available()
    return dict(
        kind="env",
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        python=platform.python_version(),
        torch=torch.__version__,
        numpy=np.__version__,
        cpu=cpu_model(),
        cores=os.cpu_count(),
        threads=threads,
        load_avg=list(os.getloadavg()),
        gpu=torch.cuda.get_device_name() if gpu else None,
        command=" ".join(sys.argv),
        quick=args.quick,
    )


# --- data ----------------------------------------------------------------------------------------


def synthetic(rows: int, n_vars: int) -> np.ndarray:
    """Daily and weekly cycles plus a slow random walk and noise, per variable (float32, built in place)."""
    rng = np.random.default_rng(0)
    out = np.empty((rows, n_vars), dtype=np.float32)
    t = np.arange(rows, dtype=np.float32)
    for v in range(n_vars):
        walk = np.cumsum(rng.standard_normal(rows, dtype=np.float32)) / 50
        out[:, v] = (
            np.sin(2 * np.pi * t / 48 + v)
            + 0.5 * np.sin(2 * np.pi * t / 336)
            + walk
            + 0.1 * rng.standard_normal(rows, dtype=np.float32)
        )
    return out


def real(name: str) -> np.ndarray:
    from cellcast.pipeline.data.datasets import dataset_info, load_bundled

    info = dataset_info(name)
    return load_bundled(name)[list(info.targets) + list(info.features)].to_numpy(np.float32)


def window_set(values: np.ndarray, lookback: int, horizon: int, name: str = "bench") -> WindowSet:
    """Every window of the series as one split (assembly cost does not depend on the split)."""
    n = len(values) - lookback - horizon + 1
    if n < 1:
        raise SystemExit(f"{name}: {len(values)} rows are too few for lookback {lookback} + horizon {horizon}")
    V = values.shape[1]
    meta = WindowMeta(
        name=name,
        variables=[f"v{i}" for i in range(V)],
        targets=["v0"],
        freq="30min",
        lookback=lookback,
        horizon=horizon,
        stride=1,
        rows=len(values),
        bounds={"val": n, "test": n},
        counts={"train": n, "val": 0, "test": 0},
        mean=[0.0] * V,
        std=[1.0] * V,
        start="",
        end="",
        split_times={},
    )
    starts = {"train": np.arange(n), "val": np.arange(0), "test": np.arange(0)}
    return WindowSet(values, np.arange(len(values)), meta, starts)


class SeedWindows(torch.utils.data.Dataset):
    """The seed tutorial's Dataset: a numpy slice and two new tensors per item."""

    def __init__(self, data: np.ndarray, lookback: int, horizon: int, target_idx: list[int]):
        self.data, self.lookback, self.horizon, self.target_idx = data, lookback, horizon, target_idx

    def __len__(self):
        return len(self.data) - self.lookback - self.horizon + 1

    def __getitem__(self, i):
        x = self.data[i : i + self.lookback]
        y = self.data[i + self.lookback : i + self.lookback + self.horizon, self.target_idx]
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


# --- batch makers: each returns step() -> windows assembled ---------------------------------------


def seed_maker(ws: WindowSet, batch: int, device: str = "cpu"):
    ds = SeedWindows(ws.values, ws.meta.lookback, ws.meta.horizon, ws.meta.target_idx)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0)
    it = iter(loader)

    def step():
        nonlocal it
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        if device != "cpu":
            x, y = x.to(device), y.to(device)
        return len(x)

    return step


def numpy_maker(ws: WindowSet, batch: int):
    rng = np.random.default_rng(0)
    starts = ws.starts["train"]
    state = {"order": rng.permutation(starts), "pos": 0}

    def step():
        if state["pos"] >= len(starts):
            state["order"], state["pos"] = rng.permutation(starts), 0
        idx = state["order"][state["pos"] : state["pos"] + batch]
        state["pos"] += batch
        x, y = ws.batch(idx)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        return len(x)

    return step


def torch_maker(ws: WindowSet, batch: int, device: str = "cpu", contiguous: bool = False):
    tw = ws.to_torch(device)
    starts = tw.starts["train"]
    gen = torch.Generator(device=tw.device).manual_seed(0)
    state = {"order": None, "pos": len(starts)}

    def step():
        if state["pos"] >= len(starts):
            state["order"] = starts[torch.randperm(len(starts), generator=gen, device=tw.device)]
            state["pos"] = 0
        idx = state["order"][state["pos"] : state["pos"] + batch]
        state["pos"] += batch
        x, y = tw.batch(idx)
        if contiguous:
            x = x.contiguous()
        return len(idx)

    return step


def methods(gpu: bool) -> dict:
    m = {
        "seed-b64": lambda ws: seed_maker(ws, 64),
        "seed-b1024": lambda ws: seed_maker(ws, 1024),
        "numpy-b64": lambda ws: numpy_maker(ws, 64),
        "numpy-b1024": lambda ws: numpy_maker(ws, 1024),
        "torch-b64": lambda ws: torch_maker(ws, 64),
        "torch-b1024": lambda ws: torch_maker(ws, 1024),
        "torch-b1024+contig": lambda ws: torch_maker(ws, 1024, contiguous=True),
    }
    if gpu:
        m |= {
            "seed-b64-cuda": lambda ws: seed_maker(ws, 64, "cuda"),
            "torch-b1024-cuda": lambda ws: torch_maker(ws, 1024, "cuda"),
            "torch-b16384-cuda": lambda ws: torch_maker(ws, 16384, "cuda"),
        }
    return m


def timed(step, budget: float, cuda: bool) -> tuple[int, float]:
    for _ in range(2):  # warm-up: first iterator, allocator, kernels
        step()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < budget:
        n += step()
    sync()
    return n, time.perf_counter() - t0


def throughput(out: Out, datasets: dict, args) -> list[dict]:
    gpu = torch.cuda.is_available()
    ms = methods(gpu)
    rows = []
    for dname, values in datasets.items():
        ws = window_set(values, args.lookback, args.horizon, dname)
        for rep in range(args.repeats):
            for mname, make in ms.items():  # round-robin: load on the shared machine hits every method
                n, s = timed(make(ws), args.budget, "cuda" in mname)
                rows.append(
                    out.emit(
                        kind="assembly",
                        dataset=dname,
                        rows=len(values),
                        vars=values.shape[1],
                        lookback=args.lookback,
                        horizon=args.horizon,
                        method=mname,
                        repeat=rep,
                        windows=n,
                        seconds=round(s, 4),
                        windows_per_s=round(n / s),
                    )
                )
    return rows


def summarise(out: Out, rows: list[dict], base: str = "seed-b64") -> list[dict]:
    summary = []
    for dname in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dname]
        reps = sorted({r["repeat"] for r in mine})
        for mname in dict.fromkeys(r["method"] for r in mine):
            rate = [r["windows_per_s"] for r in mine if r["method"] == mname]
            # the ratio within each repeat, then the median: both sides saw the same load
            ratio = [
                next(r["windows_per_s"] for r in mine if r["method"] == mname and r["repeat"] == k)
                / next(r["windows_per_s"] for r in mine if r["method"] == base and r["repeat"] == k)
                for k in reps
            ]
            summary.append(
                out.emit(
                    kind="assembly-summary",
                    dataset=dname,
                    method=mname,
                    repeats=len(rate),
                    median_windows_per_s=round(statistics.median(rate)),
                    min=min(rate),
                    max=max(rate),
                    spread_pct=round(100 * (max(rate) - min(rate)) / statistics.median(rate), 1),
                    median_ratio_vs_seed_b64=round(statistics.median(ratio), 2),
                    ratios=[round(x, 2) for x in ratio],
                )
            )
    return summary


# --- memory --------------------------------------------------------------------------------------


def _hwm_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _rss_kb() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> str:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (and ru_maxrss) to the current RSS
        return "VmHWM after clear_refs"
    except OSError:
        return "ru_maxrss delta (no reset)"


def _assemble(method: str, ws: WindowSet, batches: int, batch: int, device: str) -> None:
    if method == "materialise":
        starts, L, H = ws.starts["train"], ws.meta.lookback, ws.meta.horizon
        x = np.stack([ws.values[s : s + L] for s in starts])
        y = np.stack([ws.values[s + L : s + L + H][:, ws.meta.target_idx] for s in starts])
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        if device != "cpu":
            x, y = x.to(device), y.to(device)
        idx = torch.randperm(len(x))[:batch].to(x.device)
        for _ in range(batches):
            x[idx], y[idx]
        return
    step = {
        "seed": lambda: seed_maker(ws, 64, device),
        "numpy": lambda: numpy_maker(ws, batch),
        "torch": lambda: torch_maker(ws, batch, device),
    }[method]()
    for _ in range(batches):
        step()


def mem_child(spec: dict) -> None:
    """One configuration in a fresh process; prints one JSON line."""
    torch.set_num_threads(spec["threads"])
    values = np.load(spec["npy"])
    device = spec["device"]
    # the same code path on a tiny series first: lazy inits (thread pools, CUDA context) are not the method's cost
    _assemble(spec["method"], window_set(synthetic(600, values.shape[1]), 24, 8), 2, 64, device)
    ws_rows = len(values)
    how = _reset_peak()
    before_hwm = _hwm_kb() if how.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    before_rss = _rss_kb()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        dev_before = torch.cuda.memory_allocated()
    ws = window_set(values, spec["lookback"], spec["horizon"])
    _assemble(spec["method"], ws, spec["batches"], spec["batch"], device)
    after = _hwm_kb() if how.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = dict(
        rows=ws_rows,
        peak_mib=round((after - before_rss) / 1024, 1),
        rss_before_mib=round(before_rss / 1024, 1),
        hwm_before_mib=round(before_hwm / 1024, 1),
        how=how,
    )
    if device == "cuda":
        torch.cuda.synchronize()
        row["device_peak_mib"] = round((torch.cuda.max_memory_allocated() - dev_before) / 2**20, 1)
    print(json.dumps(row), flush=True)


def memory(out: Out, datasets: dict, args) -> list[dict]:
    gpu = torch.cuda.is_available()
    rows = []
    configs = [("seed", "cpu"), ("numpy", "cpu"), ("torch", "cpu"), ("materialise", "cpu")]
    if gpu:
        configs += [("torch", "cuda"), ("materialise", "cuda")]
    with tempfile.TemporaryDirectory() as tmp:
        for dname, values in datasets.items():
            npy = Path(tmp) / f"{dname}.npy"
            np.save(npy, values)
            V = values.shape[1]
            for L in args.mem_lookbacks:
                n = len(values) - L - args.horizon + 1
                if n < 1:
                    continue
                series_mib = values.nbytes / 2**20
                full_mib = n * (L * V + args.horizon) * 4 / 2**20  # every window's inputs and targets
                batch_mib = args.mem_batch * ((L + args.horizon) * V) * 4 / 2**20
                for method, device in configs:
                    base = dict(
                        kind="memory",
                        dataset=dname,
                        lookback=L,
                        horizon=args.horizon,
                        method=method,
                        device=device,
                        windows=n,
                        series_mib=round(series_mib, 1),
                        materialised_mib=round(full_mib, 1),
                        batch_mib=round(batch_mib, 1),
                        batch=64 if method == "seed" else args.mem_batch,
                    )
                    if method == "materialise" and full_mib > args.mem_cap_gb * 1024:
                        rows.append(
                            out.emit(
                                **base,
                                skipped=f"would need {full_mib / 1024:.1f} GiB (> --mem-cap-gb {args.mem_cap_gb:g})",
                            )
                        )
                        continue
                    spec = dict(
                        npy=str(npy),
                        lookback=L,
                        horizon=args.horizon,
                        method=method,
                        device=device,
                        batches=args.mem_batches,
                        batch=args.mem_batch,
                        threads=args.threads,
                    )
                    p = subprocess.run(
                        [sys.executable, __file__, "--_mem-child", json.dumps(spec)],
                        capture_output=True,
                        text=True,
                        timeout=900,
                    )
                    if p.returncode != 0:
                        rows.append(out.emit(**base, error=p.stderr.strip().splitlines()[-1][:300]))
                        continue
                    rows.append(out.emit(**base, **json.loads(p.stdout.strip().splitlines()[-1])))
    return rows


# --- report --------------------------------------------------------------------------------------


def tables(summary: list[dict], mem: list[dict], args) -> str:
    lines = []
    for dname in dict.fromkeys(r["dataset"] for r in summary):
        mine = [r for r in summary if r["dataset"] == dname]
        lines += [
            f"\nBatch assembly, {dname} (lookback {args.lookback}, horizon {args.horizon}; "
            f"median of {mine[0]['repeats']} repeats)\n",
            "| method | windows/s (median) | min .. max | spread | vs seed-b64 (median of per-repeat ratios) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for r in mine:
            lines.append(
                f"| {r['method']} | {r['median_windows_per_s']:,} | {r['min']:,} .. {r['max']:,} | "
                f"{r['spread_pct']}% | {r['median_ratio_vs_seed_b64']}x |"
            )
    if mem:
        lines += ["\nPeak memory above the loaded series (MiB, resident; fresh process per cell)\n"]
        for dname in dict.fromkeys(r["dataset"] for r in mem):
            mine = [r for r in mem if r["dataset"] == dname]
            cols = list(dict.fromkeys((r["method"], r["device"]) for r in mine))
            head = " | ".join(f"{m} ({d})" for m, d in cols)
            lines += [
                f"\n{dname} ({mine[0]['series_mib']} MiB series)\n",
                f"| lookback | windows | all windows materialised (computed) | batch of {args.mem_batch} "
                f"(computed) | {head} |",
                "| ---: " * (4 + len(cols)) + "|",
            ]
            for L in dict.fromkeys(r["lookback"] for r in mine):
                at = {(r["method"], r["device"]): r for r in mine if r["lookback"] == L}
                r0 = next(iter(at.values()))
                cells = []
                for c in cols:
                    r = at.get(c, {})
                    if "skipped" in r:
                        cells.append("skipped")
                    elif "error" in r:
                        cells.append("error")
                    elif c[1] == "cuda":
                        cells.append(f"{r.get('device_peak_mib', '')} (device)")
                    else:
                        cells.append(f"{r.get('peak_mib', '')}")
                lines.append(
                    f"| {L} | {r0['windows']:,} | {r0['materialised_mib']:,} | {r0['batch_mib']} | "
                    + " | ".join(cells)
                    + " |"
                )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--_mem-child":
        mem_child(json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, short budgets, no results file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=2.0, help="seconds per throughput measurement")
    ap.add_argument("--dataset", default="elecdemand", help="bundled real series (all its variables)")
    ap.add_argument("--rows", type=int, default=200_000, help="rows of the synthetic series (0: none)")
    ap.add_argument("--vars", type=int, default=7, help="variables of the synthetic series")
    ap.add_argument("--lookback", type=int, default=168)
    ap.add_argument("--horizon", type=int, default=24)
    ap.add_argument(
        "--mem-lookbacks",
        type=int,
        nargs="*",
        default=[24, 168, 720, 2000],
        help="lookbacks of the memory sweep (none: skip it)",
    )
    ap.add_argument("--mem-batch", type=int, default=1024)
    ap.add_argument("--mem-batches", type=int, default=20, help="batches assembled per memory cell")
    ap.add_argument("--mem-cap-gb", type=float, default=3.0, help="skip materialising above this size")
    ap.add_argument("--out", type=Path, help="results file (default bench/results/windows-<machine>.jsonl)")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.budget, args.rows = 1, 0.3, min(args.rows, 20_000)
        args.mem_lookbacks, args.mem_batches = [24, 720], 3
    torch.set_num_threads(args.threads)
    path = args.out or (None if args.quick else RESULTS / f"windows-{machine_tag(args.threads)}.jsonl")
    out = Out(path)
    out.emit(**env_row(args.threads, args))
    datasets = {args.dataset: real(args.dataset)}
    if args.rows:
        datasets[f"synthetic-{args.rows // 1000}k"] = synthetic(args.rows, args.vars)
    rows = throughput(out, datasets, args)
    summary = summarise(out, rows)
    mem_sets = dict(list(datasets.items())[:1]) if args.quick else datasets  # quick: the real series only
    mem = memory(out, mem_sets, args) if args.mem_lookbacks else []
    out.emit(kind="env-end", load_avg=list(os.getloadavg()))
    print(tables(summary, mem, args))
    if path:
        print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
