"""Training benchmark: cellcast's trainer vs the seed tutorial's per-item loop, same data, same model.

  seed      the seed's pattern (seeds/000 section 5.2): a torch Dataset whose __getitem__ slices numpy and builds
            two tensors per item, DataLoader(batch 64, shuffle=True, num_workers=0), the model, Adam (plain,
            fp32); batches are copied to the device per step. Loss: the trainer's (MAE in scaled units) so that
            validation losses compare; no clipping, no schedule.
  cellcast  `pipeline.train.train_candidate` itself: the series resident on the device, batches gathered there
            from `unfold` views, clipping, plateau schedule; on CUDA also bf16 autocast and fused Adam. Its
            throughput is `TrainResult.windows_per_s` over a fixed epoch budget (training steps only, validation
            excluded), after one warm-up call in the same process.
Same model for both: `Forecaster` with rnn_steps = lookback and anchor_season None (the residual off), so each
reads the whole lookback, like the seed's network. The production configuration (params.yaml for the dataset:
its lookback/horizon, rnn_steps, the residual on the strongest seasonal-naive baseline, its batch size) is
reported separately.

Time to quality, per cell: the seed loop trains for --ttq-budget seconds (validating every --ttq-every windows,
the trainer's epoch size, with the trainer's validation function); its best validation loss is the target; then
the trainer runs with the same budget and we record the wall time at which it first reaches the target. Wall
time includes each side's validation passes and, for cellcast, its setup (model, initial validation).

Throughput rows run round-robin over cells, --repeats times; the report gives medians (ratios within a repeat).

    .venv/bin/python bench/train.py [--quick] [--repeats 3] [--cells rnn lstm gru] [--ttq-budget 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# Before torch loads OpenMP: on a shared, oversubscribed machine spinning worker threads slowed a 2-thread LSTM
# step up to 80x (20 vs 1583 windows/s); passive waiting keeps the numbers about the code, not the neighbours.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from seed_loop import SeedLoop  # noqa: E402  (bench/: the seed tutorial's loop)
from windows import RESULTS, Out, env_row, machine_tag  # noqa: E402

from cellcast.pipeline.config import Settings, load_params  # noqa: E402
from cellcast.pipeline.data.datasets import dataset_info, load_bundled  # noqa: E402
from cellcast.pipeline.data.window import build_windows  # noqa: E402
from cellcast.pipeline.data.windowset import WindowSet  # noqa: E402
from cellcast.pipeline.modeling.train import Candidate, _val_loss, train_candidate  # noqa: E402
from cellcast.pipeline.registry.assessment import baselines  # noqa: E402

CUDA = torch.cuda.is_available()
DEV = torch.device("cuda" if CUDA else "cpu")


# --- data and settings ---------------------------------------------------------------------------


def settings_for(base: Settings, *, window: dict | None = None, train: dict | None = None) -> Settings:
    w = base.window.model_copy(update=window or {})
    t = base.train.model_copy(update={"device": DEV.type, **(train or {})})
    return base.model_copy(update={"window": w, "train": t})


def window_set(name: str, settings: Settings) -> WindowSet:
    info = dataset_info(name)
    return build_windows(
        load_bundled(name),
        variables=list(info.targets) + list(info.features),
        targets=list(info.targets),
        freq=info.freq,
        settings=settings,
    )


def like_for_like(base: Settings, args, **train) -> Settings:
    """Residual off, the cell reads the whole lookback, past inputs only (no calendar or known-future block, no
    anchor, decoder or ensemble): the seed's network shape."""
    s = settings_for(
        base,
        window={"lookback": args.lookback, "horizon": args.horizon},
        train={
            "rnn_steps": args.lookback,
            "residual": False,
            "hidden_size": args.hidden,
            "num_layers": args.layers,
            "lr": args.lr,
            "anchor": "seasonal_naive",
            "decoder": False,
            "ensemble": False,
            **train,
        },
    )
    return s.model_copy(
        update={
            "calendar": s.calendar.model_copy(update={"parts": []}),
            "ingest": s.ingest.model_copy(update={"future_features": []}),
        }
    )


def sync():
    if CUDA:
        torch.cuda.synchronize()


def seed_throughput(ws, cand, settings, args) -> float:
    loop = SeedLoop(ws, cand, settings, DEV, args.seed_batch)
    for _ in range(3):
        loop.step()
    sync()
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < args.seed_budget:
        n += loop.step()
    sync()
    return n / (time.perf_counter() - t0)


def cellcast_throughput(ws, cand, settings, args) -> tuple[float, dict]:
    fixed = {
        "epochs": args.epochs,
        "max_train_windows": args.epoch_windows,
        "patience": args.epochs + 1,
        "time_budget_s": 1e9,
    }
    s = settings_for(settings, train=fixed)
    r = train_candidate(ws, cand, s, anchor_season=args._anchor, device=DEV)
    return r.windows_per_s, {"epochs": len(r.history), "val_loss": round(r.best_val_loss, 5)}


def warm_up(ws, cand, settings, anchor):
    """One short call per process and shape: thread pools, cuDNN plans, allocator."""
    s = settings_for(settings, train={"epochs": 1, "max_train_windows": 2 * settings.train.batch_size})
    train_candidate(ws, cand, s, anchor_season=anchor, device=DEV)


# --- time to quality -----------------------------------------------------------------------------


def seed_curve(ws, cand, settings, args) -> tuple[list[tuple[float, float]], int]:
    loop = SeedLoop(ws, cand, settings, DEV, args.seed_batch)
    tw = ws.to_torch(DEV)
    curve, seen, since = [], 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.ttq_budget:
        k = loop.step()
        seen += k
        since += k
        if since >= args.ttq_every:
            since = 0
            curve.append(
                (time.perf_counter() - t0, _val_loss(loop.model, tw, tw.starts["val"], loop.scale, False, 4096))
            )
    curve.append((time.perf_counter() - t0, _val_loss(loop.model, tw, tw.starts["val"], loop.scale, False, 4096)))
    return curve, seen


def cellcast_curve(ws, cand, settings, args, anchor) -> tuple[list[tuple[float, float]], object]:
    s = settings_for(
        settings,
        train={
            "epochs": 100_000,
            "max_train_windows": args.ttq_every,
            "patience": 100_000,
            "time_budget_s": args.ttq_budget,
        },
    )
    curve = []
    t0 = time.perf_counter()
    r = train_candidate(
        ws,
        cand,
        s,
        anchor_season=anchor,
        device=DEV,
        on_epoch=lambda row: curve.append((time.perf_counter() - t0, row["val_loss"])),
    )
    return curve, r


def first_reach(curve, target) -> float | None:
    return next((round(t, 2) for t, v in curve if v <= target + 1e-9), None)


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: one repeat, tiny budgets, no results file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    ap.add_argument("--dataset", default="elecdemand")
    ap.add_argument("--lookback", type=int, help="like-for-like lookback (default: 168 on CUDA, 96 on CPU)")
    ap.add_argument("--horizon", type=int, help="like-for-like horizon (default: 24 on CUDA, 48 on CPU)")
    ap.add_argument("--hidden", type=int, help="default: 128 on CUDA, 64 on CPU")
    ap.add_argument("--layers", type=int, help="default: 2 on CUDA, 1 on CPU")
    ap.add_argument(
        "--batch",
        type=int,
        nargs="+",
        help="cellcast batch sizes for throughput (default: 4096 8192 "
        "on CUDA (elecdemand), 256 (params.yaml) and 64 (the seed's) on CPU; cap 16384)",
    )
    ap.add_argument("--seed-batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3, help="both loops (params.yaml's train.lr)")
    ap.add_argument("--seed-budget", type=float, default=4.0, help="seconds of seed steps per throughput row")
    ap.add_argument("--epochs", type=int, help="cellcast epochs per throughput row (default: 20 on CUDA, 2 on CPU)")
    ap.add_argument(
        "--epoch-windows", type=int, help="windows per cellcast epoch (default: 4096 on CPU, all train windows on CUDA)"
    )
    ap.add_argument("--ttq-budget", type=float, default=15.0, help="seconds of training per time-to-quality run")
    ap.add_argument(
        "--ttq-every",
        type=int,
        help="windows between validations, both loops (default: 16384 on CUDA "
        "(capped at the train windows by the trainer), 2048 on CPU)",
    )
    ap.add_argument("--ttq-batch", type=int, help="cellcast batch for time to quality (default: --batch)")
    ap.add_argument("--no-ttq", action="store_true")
    ap.add_argument("--no-production", action="store_true")
    ap.add_argument("--out", type=Path, help="results file (default bench/results/train-<machine>.jsonl)")
    args = ap.parse_args()
    args.lookback = args.lookback or (168 if CUDA else 96)
    args.horizon = args.horizon or (24 if CUDA else 48)
    args.hidden = args.hidden or (128 if CUDA else 64)
    args.layers = args.layers or (2 if CUDA else 1)
    # CUDA: elecdemand has ~12k train windows, so an epoch is one or a few batches of this size; cap 16384
    # (cuDNN's LSTM crashed at 32768)
    args.batch = [min(b, 16384) for b in (args.batch or ([4096, 8192] if CUDA else [256, 64]))]
    args.epochs = args.epochs or (20 if CUDA else 2)
    args.ttq_every = args.ttq_every or (16384 if CUDA else 2048)
    args.ttq_batch = min(args.ttq_batch or args.batch[0], 16384)
    if args.quick:
        args.repeats, args.seed_budget, args.epochs, args.ttq_budget, args.ttq_every = 1, 0.5, 1, 2.0, 512
        args.epoch_windows = args.epoch_windows or 1024
    args._anchor = None
    torch.set_num_threads(args.threads)
    path = args.out or (None if args.quick else RESULTS / f"train-{machine_tag(args.threads)}.jsonl")
    out = Out(path)
    out.emit(**env_row(args.threads, args), device=str(DEV), bf16=CUDA, fused_adam=CUDA)

    base = load_params(ROOT / "params.yaml").for_dataset(args.dataset)
    lfl = like_for_like(base, args, batch_size=args.batch[0])
    ws = window_set(args.dataset, lfl)
    args.epoch_windows = min(args.epoch_windows or (len(ws.starts["train"]) if CUDA else 4096), len(ws.starts["train"]))
    cfg = dict(
        dataset=args.dataset,
        lookback=args.lookback,
        horizon=args.horizon,
        hidden=args.hidden,
        layers=args.layers,
        train_windows=len(ws.starts["train"]),
        val_windows=len(ws.starts["val"]),
    )
    out.emit(
        kind="config",
        name="like-for-like",
        rnn_steps=args.lookback,
        anchor_season=None,
        batches=args.batch,
        seed_batch=args.seed_batch,
        lr=args.lr,
        **cfg,
    )

    prod = settings_for(base)
    prod_ws = prod_anchor = None
    if not args.no_production:
        prod_ws = window_set(args.dataset, prod)
        prod_anchor = baselines(prod_ws, prod).anchor_season
        out.emit(
            kind="config",
            name="production",
            dataset=args.dataset,
            lookback=prod_ws.meta.lookback,
            horizon=prod_ws.meta.horizon,
            rnn_steps=prod.train.rnn_steps,
            residual=prod.train.residual,
            anchor_season=prod_anchor,
            hidden=prod.train.hidden_size,
            layers=prod.train.num_layers,
            batch=prod.train.batch_size,
            lr=prod.train.lr,
        )

    def prod_cand(cell):
        hs, ls = prod.train.hidden_size, prod.train.num_layers
        return Candidate(cell, hs[0] if isinstance(hs, list) else hs, ls[0] if isinstance(ls, list) else ls)

    # throughput, round-robin over cells
    for cell in args.cells:
        warm_up(ws, Candidate(cell, args.hidden, args.layers), lfl, None)
        if prod_ws is not None:
            warm_up(prod_ws, prod_cand(cell), prod, prod_anchor)
    rows = []
    for rep in range(args.repeats):
        for cell in args.cells:
            cand = Candidate(cell, args.hidden, args.layers)
            seed = seed_throughput(ws, cand, lfl, args)
            args._anchor = None
            row = dict(kind="train-throughput", cell=cell, repeat=rep, seed_windows_per_s=round(seed))
            for b in args.batch:
                cc, extra = cellcast_throughput(ws, cand, settings_for(lfl, train={"batch_size": b}), args)
                row |= {
                    f"cellcast_b{b}_windows_per_s": round(cc),
                    f"ratio_b{b}": round(cc / seed, 2),
                    f"val_loss_b{b}": extra["val_loss"],
                }
            if prod_ws is not None:
                args._anchor = prod_anchor
                pc, pextra = cellcast_throughput(prod_ws, prod_cand(cell), prod, args)
                row |= {"production_windows_per_s": round(pc), "production_ratio": round(pc / seed, 2)}
            rows.append(out.emit(**row, load_avg=round(os.getloadavg()[0], 2)))
    summary = []
    for cell in args.cells if rows else []:  # --repeats 0: time to quality only
        mine = [r for r in rows if r["cell"] == cell]
        med = lambda k, mine=mine: statistics.median(r[k] for r in mine)  # noqa: E731

        def spread(k, mine=mine, med=med):
            return round(100 * (max(r[k] for r in mine) - min(r[k] for r in mine)) / med(k), 1)

        s = dict(
            kind="train-summary",
            cell=cell,
            repeats=len(mine),
            seed_windows_per_s=round(med("seed_windows_per_s")),
            seed_spread_pct=spread("seed_windows_per_s"),
        )
        for b in args.batch:
            s |= {
                f"cellcast_b{b}_windows_per_s": round(med(f"cellcast_b{b}_windows_per_s")),
                f"cellcast_b{b}_spread_pct": spread(f"cellcast_b{b}_windows_per_s"),
                f"median_ratio_b{b}": med(f"ratio_b{b}"),
                f"ratios_b{b}": [r[f"ratio_b{b}"] for r in mine],
            }
        if prod_ws is not None:
            s |= {
                "production_windows_per_s": round(med("production_windows_per_s")),
                "production_median_ratio": med("production_ratio"),
            }
        summary.append(out.emit(**s))

    # time to quality
    ttq = []
    if not args.no_ttq:
        for cell in args.cells:
            cand = Candidate(cell, args.hidden, args.layers)
            sc, seen = seed_curve(ws, cand, lfl, args)
            target = min(v for _, v in sc)
            lfl_q = settings_for(lfl, train={"batch_size": args.ttq_batch})
            cc, r = cellcast_curve(ws, cand, lfl_q, args, None)
            row = dict(
                kind="time-to-quality",
                cell=cell,
                budget_s=args.ttq_budget,
                every=args.ttq_every,
                seed_target_val_loss=round(target, 5),
                seed_reached_s=first_reach(sc, target),
                seed_windows=seen,
                cellcast_batch=args.ttq_batch,
                cellcast_reached_s=first_reach(cc, target),
                cellcast_best_val_loss=round(min(v for _, v in cc), 5),
                cellcast_epochs=len(cc),
                cellcast_windows_per_s=round(r.windows_per_s),
                initial_val_loss=round(r.initial_val_loss, 5),
                seed_curve=[(round(t, 2), round(v, 5)) for t, v in sc],
                cellcast_curve=[(round(t, 2), round(v, 5)) for t, v in cc],
            )
            if prod_ws is not None:
                pc, pr = cellcast_curve(prod_ws, prod_cand(cell), prod, args, prod_anchor)
                same = prod_ws.meta.horizon == args.horizon  # same val targets only with the same horizon
                row |= {
                    "production_best_val_loss": round(min(v for _, v in pc), 5),
                    "production_initial_val_loss": round(pr.initial_val_loss, 5),
                    "production_reached_s": first_reach(pc, target) if same else None,
                    "production_comparable": same,
                    "production_epochs": len(pc),
                    "production_curve": [(round(t, 2), round(v, 5)) for t, v in pc],
                }
            ttq.append(out.emit(**row))
    out.emit(kind="env-end", load_avg=list(os.getloadavg()))
    print(tables(summary, ttq, args, prod_ws, prod_anchor, prod))
    if path:
        print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def tables(summary, ttq, args, prod_ws, prod_anchor, prod) -> str:
    dev = "CUDA (bf16 autocast, fused Adam, resident series)" if CUDA else f"CPU, {args.threads} threads"
    lines = [
        f"\nTraining throughput, {args.dataset}, {dev}; {args.hidden}x{args.layers} cells, lookback "
        f"{args.lookback} read in full, horizon {args.horizon}; seed batch {args.seed_batch}; "
        f"median of {summary[0]['repeats'] if summary else 0} repeats (ratios: within each repeat)\n"
    ]
    head = "| cell | seed loop windows/s (spread) |" + "".join(
        f" cellcast b{b} windows/s (spread) | b{b} vs seed (median; each repeat) |" for b in args.batch
    )
    sep = "| --- | ---: |" + " ---: | ---: |" * len(args.batch)
    if prod_ws is not None:
        head += " production windows/s | production vs seed |"
        sep += " ---: | ---: |"
    lines += [head, sep]
    if not summary:  # --repeats 0: time to quality only
        lines = []
    for s in summary:
        line = f"| {s['cell']} | {s['seed_windows_per_s']:,} ({s['seed_spread_pct']}%) |" + "".join(
            f" {s[f'cellcast_b{b}_windows_per_s']:,} ({s[f'cellcast_b{b}_spread_pct']}%) | {s[f'median_ratio_b{b}']}x; "
            f"{', '.join(map(str, s[f'ratios_b{b}']))} |"
            for b in args.batch
        )
        if prod_ws is not None:
            line += f" {s['production_windows_per_s']:,} | {s['production_median_ratio']}x |"
        lines.append(line)
    if prod_ws is not None and summary:
        lines.append(
            f"\nproduction = params.yaml for {args.dataset}: lookback {prod_ws.meta.lookback}, horizon "
            f"{prod_ws.meta.horizon}, rnn_steps {prod.train.rnn_steps}, residual on seasonal naive "
            f"{prod_anchor}, {prod.train.hidden_size}x{prod.train.num_layers}, batch {prod.train.batch_size}"
        )
    if ttq:
        lines += [
            f"\nTime to quality: the seed loop's best validation loss (scaled MAE) after {args.ttq_budget:g} s "
            f"is the target; wall time for each to first reach it (validation every {args.ttq_every} windows)\n"
        ]
        head = "| cell | target (seed best) | seed reached at | cellcast reached at | cellcast best in budget |"
        sep = "| --- | ---: | ---: | ---: | ---: |"
        if prod_ws is not None:
            head += " production best (baseline) | production reached at |"
            sep += " ---: | ---: |"
        lines += [head, sep]
        for r in ttq:
            fmt = lambda t: "not in budget" if t is None else f"{t:g} s"  # noqa: E731
            line = (
                f"| {r['cell']} | {r['seed_target_val_loss']} | {fmt(r['seed_reached_s'])} | "
                f"{fmt(r['cellcast_reached_s'])} | {r['cellcast_best_val_loss']} |"
            )
            if prod_ws is not None:
                reach = fmt(r["production_reached_s"]) if r["production_comparable"] else "n/a (other horizon)"
                line += f" {r['production_best_val_loss']} ({r['production_initial_val_loss']}) | {reach} |"
            lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
