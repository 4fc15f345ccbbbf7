"""The training loop on the CPU: learning, reproducibility, resuming, the anchored start."""

import os

import numpy as np
import pandas as pd
import pytest
import torch

from cellcast.pipeline.config import Params
from cellcast.pipeline.data.window import build_windows
from cellcast.pipeline.modeling.evaluate import evaluate_baselines, evaluate_forecasts, predict_windows, seasonal_naive
from cellcast.pipeline.modeling.train import Candidate, predictor, train_candidate

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ws():
    rng = np.random.default_rng(1)
    n = 1500
    t = np.arange(n)
    level = np.cumsum(rng.standard_normal(n)) * 0.05  # a drifting level seasonal naive can't follow
    y = 10 + np.sin(2 * np.pi * t / 24) + level + 0.05 * rng.standard_normal(n)
    df = pd.DataFrame(
        {"timestamp": pd.date_range("2022-01-01", periods=n, freq="h"), "y": y, "x": np.cos(2 * np.pi * t / 24)}
    )
    return build_windows(df, variables=["y", "x"], targets=["y"], freq="h", settings=settings())


def settings(evaluate=None, **train):
    base = {
        "epochs": 6,
        "batch_size": 64,
        "max_train_windows": 640,
        "time_budget_s": 120,
        "hidden_size": 16,
        "rnn_steps": 12,
        "patience": 3,
        "lr": 0.01,
        "device": "cpu",
        # the training loop on its own: the seasonal-naive anchor, no calendar, one cell at a time (the defaults'
        # recipe has its tests in test_forecaster.py, test_calendar.py and test_config.py)
        "anchor": "seasonal_naive",
        "decoder": False,
        "ensemble": False,
        "parallel": 1,
    }
    return Params(
        window={"lookback": 36, "horizon": 6}, calendar={"parts": []}, train={**base, **train}, evaluate=evaluate or {}
    ).for_dataset("syn")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_each_cell_learns_and_beats_its_anchor(ws, cell):
    r = train_candidate(ws, Candidate(cell, 16, 1), settings(), anchor_season=24)
    assert r.best_val_loss < r.initial_val_loss, "training did not improve on the seasonal-naive start"
    pred = predict_windows(predictor(r.model), ws, "test")
    m, by_step = evaluate_forecasts(ws, "test", pred)
    base = evaluate_baselines(ws, "test", [24]).scores["seasonal_naive_24"]["mase"]
    assert m["mase"] < base
    assert len(by_step) == ws.meta.horizon and len(r.history) >= 1
    assert {"epoch", "train_loss", "val_loss", "lr"} <= set(r.history[0])


def test_untrained_anchored_model_is_the_seasonal_naive_forecast(ws):
    r = train_candidate(ws, Candidate("gru", 8, 1), settings(epochs=1, max_train_windows=1, lr=1e-12), anchor_season=24)
    pred = predict_windows(predictor(r.model), ws, "val")
    np.testing.assert_allclose(pred, seasonal_naive(ws, ws.starts["val"], 24), rtol=1e-5, atol=1e-4)


def test_same_params_and_data_give_the_same_metrics_on_cpu(ws):
    a = train_candidate(ws, Candidate("lstm", 16, 1), settings(epochs=2), anchor_season=24)
    b = train_candidate(ws, Candidate("lstm", 16, 1), settings(epochs=2), anchor_season=24)
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]


def test_an_interrupted_run_resumes_from_its_checkpoint(ws, tmp_path):
    full = train_candidate(
        ws, Candidate("gru", 16, 1), settings(epochs=4, patience=10), 24, checkpoint_dir=tmp_path / "a"
    )
    # interrupt after epoch 2 (time budget), then run again with the full budget: it resumes at epoch 3
    calls = []

    def stop_after_two(row):
        calls.append(row["epoch"])
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_candidate(
            ws,
            Candidate("gru", 16, 1),
            settings(epochs=4, patience=10),
            24,
            checkpoint_dir=tmp_path / "b",
            on_epoch=stop_after_two,
        )
    resumed = train_candidate(
        ws, Candidate("gru", 16, 1), settings(epochs=4, patience=10), 24, checkpoint_dir=tmp_path / "b"
    )
    assert resumed.resumed_from == 3
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    np.testing.assert_allclose(
        [h["val_loss"] for h in resumed.history], [h["val_loss"] for h in full.history], rtol=1e-5
    )


def test_early_stopping_restores_the_best_weights(ws):
    """Training stops after `patience` epochs without a better validation loss and hands back the weights of the
    best epoch, not the last: bitwise the model a run that stopped at that epoch gives (each candidate draws from
    generators of its own, so the runs agree step for step)."""
    s = settings(epochs=30, lr=0.05, patience=2)
    r = train_candidate(ws, Candidate("rnn", 16, 1), s, anchor_season=24)
    assert r.stopped.startswith("early stop")
    losses = [h["val_loss"] for h in r.history]
    assert 1 <= r.best_epoch < len(losses), "the best epoch must not be the last one, or restoring is not tested"
    assert losses[r.best_epoch - 1] == pytest.approx(r.best_val_loss) and losses[-1] > r.best_val_loss
    at_best = train_candidate(ws, Candidate("rnn", 16, 1), settings(epochs=r.best_epoch, lr=0.05), anchor_season=24)
    got, best = _weights(r), _weights(at_best)
    # the epochs after the best scored worse, so their weights differ: the ones handed back are the best epoch's
    assert all(torch.equal(got[k], best[k]) for k in got), "the returned weights are not the best epoch's"


def _weights(result) -> dict:
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def test_candidates_trained_at_once_in_threads_equal_those_trained_one_by_one(ws):
    """Each candidate draws its initial weights, its batches and its dropout masks from generators of its own:
    trained concurrently (threads, as the flow's task runner does) they are bitwise what they are sequentially."""
    from concurrent.futures import ThreadPoolExecutor

    s = settings(epochs=3, dropout=0.3)
    cands = [Candidate(c, 16, 2) for c in ("rnn", "lstm", "gru")]
    results = [train_candidate(ws, c, s, anchor_season=24) for c in cands]
    assert all(r.best_epoch >= 1 for r in results), "kept the initial weights: nothing to compare"
    one_by_one = [_weights(r) for r in results]
    torch.manual_seed(123)  # the global RNG's state must not matter either
    with ThreadPoolExecutor(max_workers=3) as pool:
        at_once = [_weights(r) for r in pool.map(lambda c: train_candidate(ws, c, s, anchor_season=24), cands)]
    for cand, a, b in zip(cands, one_by_one, at_once):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{cand.name}: weights differ when trained in parallel"
    # and the dropout did act: without it the weights differ
    no_dropout = _weights(train_candidate(ws, cands[1], settings(epochs=3, dropout=0.0), anchor_season=24))
    assert not all(torch.equal(no_dropout[k], one_by_one[1][k]) for k in no_dropout)


def test_dropout_masks_come_from_the_candidates_generator(ws):
    from cellcast.pipeline.modeling.model import Forecaster
    from cellcast.pipeline.modeling.train import model_spec

    s = settings(num_layers=3, dropout=0.5)
    spec = model_spec(ws, Candidate("lstm", 16, 3), s, None)  # no anchor: its zero head would hide the cell
    model = Forecaster(spec, generator=torch.Generator().manual_seed(0)).train()
    x = torch.from_numpy(np.ascontiguousarray(ws.batch(ws.starts["train"][:32])[0]))
    seq = torch.randn(8, spec.steps, model.rnn.input_size)
    with torch.no_grad():
        # without dropout the layer-by-layer pass is exactly nn.LSTM's stacked pass
        assert torch.equal(model._layerwise(model.rnn, seq, 0.0)[0], model.eval().rnn(seq)[0])
        model.train()
        outs = []
        for seed in (1, 1, 2):
            model.dropout_generator = torch.Generator().manual_seed(seed)
            torch.manual_seed(seed + 100)  # a different global RNG each time: it must not matter
            outs.append(model(x))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_the_flows_thread_count_is_put_back():
    from cellcast.pipeline.modeling.train import cpu_threads, torch_threads

    before = torch.get_num_threads()
    s = settings(parallel=3, threads=2)
    assert cpu_threads(s, "cpu") == 2 and cpu_threads(s, "cuda") is None
    assert cpu_threads(settings(parallel=1), "cpu") is None  # one at a time: torch's own default
    # auto: as many at once as there are cores, at most one per candidate, the cores shared out among them
    auto = settings(parallel="auto", cells=["rnn", "lstm", "gru"])
    n = auto.train.parallel_count()
    assert (
        n == max(1, min(os.cpu_count() or 1, 3))
        and settings(parallel="auto", cells=["gru"]).train.parallel_count() == 1
    )
    assert cpu_threads(auto, "cpu") == (max(1, (os.cpu_count() or 1) // n) if n > 1 else None)
    with torch_threads(cpu_threads(s, "cpu")):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    # the candidates actually trained at once share the cores, not train.parallel: one at a time, torch's default
    assert cpu_threads(settings(parallel=2), "cpu", at_once=1) is None
    assert cpu_threads(settings(parallel=1), "cpu", at_once=2) == max(1, (os.cpu_count() or 1) // 2)


def test_a_single_series_trains_its_candidates_at_once_in_processes_a_panel_and_a_gpu_one_by_one():
    from types import SimpleNamespace

    from cellcast.flows.training import candidates_at_once

    series, panel = SimpleNamespace(is_panel=False), SimpleNamespace(is_panel=True)
    two = settings(parallel=2, cells=["rnn", "lstm", "gru"])
    assert two.train.task_runner == "processes"  # the default
    assert candidates_at_once(series, two, "cpu", 3) == 2 and candidates_at_once(series, two, "cpu", 1) == 1
    # a panel's window set is not copied into worker processes; a GPU is not shared out among them
    assert candidates_at_once(panel, two, "cpu", 3) == 1 and candidates_at_once(series, two, "cuda", 3) == 1
    threads = settings(parallel=2, task_runner="threads")
    assert candidates_at_once(panel, threads, "cpu", 3) == 2 and candidates_at_once(series, threads, "cuda", 3) == 2


def test_the_code_that_shapes_the_weights_is_in_the_checkpoint_fingerprint(ws, tmp_path, monkeypatch):
    """A finished checkpoint is reused on a rerun, but not after a change in the model, the trainer or the
    window batches (a fix or an upgrade): then the candidate trains again from its first epoch."""
    import shutil

    from cellcast.pipeline.modeling import train as train_mod

    # the hash reads the source files themselves: the same bytes give the same hash, one changed byte another
    copies = []
    for src in train_mod.WEIGHT_SOURCES:
        copies.append(tmp_path / "src" / src.name)
        copies[-1].parent.mkdir(exist_ok=True)
        shutil.copy(src, copies[-1])
    assert train_mod.code_hash(copies) == train_mod.code_hash()
    with open(copies[0], "a") as f:
        f.write("\n# a fix\n")
    assert train_mod.code_hash(copies) != train_mod.code_hash()
    assert {p.name for p in train_mod.WEIGHT_SOURCES} == {
        "model.py",
        "train.py",
        "windowset.py",
        "panel_windows.py",
        "anchor.py",
        "seasonal.py",
        "quantiles.py",
    }

    s = settings(epochs=2)
    first = train_candidate(ws, Candidate("gru", 8, 1), s, 24, checkpoint_dir=tmp_path / "ck")
    again = train_candidate(ws, Candidate("gru", 8, 1), s, 24, checkpoint_dir=tmp_path / "ck")
    assert again.resumed_from == 3 and again.history == first.history and again.stopped == first.stopped
    # the same checkpoint after an upgrade: another code version, so it trains again
    monkeypatch.setattr(train_mod, "code_version", lambda: "9.9.9+0123456789ab")
    upgraded = train_candidate(ws, Candidate("gru", 8, 1), s, 24, checkpoint_dir=tmp_path / "ck")
    assert upgraded.resumed_from is None and len(upgraded.history) == 2


def test_a_run_cut_short_by_the_time_budget_is_continued_by_a_rerun(ws, tmp_path):
    ck = tmp_path / "ck"
    full = train_candidate(ws, Candidate("lstm", 8, 1), settings(epochs=3, patience=10), 24)
    short = train_candidate(
        ws, Candidate("lstm", 8, 1), settings(epochs=3, patience=10, time_budget_s=1e-9), 24, checkpoint_dir=ck
    )
    assert short.stopped.startswith("time budget") and len(short.history) == 1
    # a rerun (here with a larger budget: the budget does not shape the weights) goes on from epoch 2
    rest = train_candidate(ws, Candidate("lstm", 8, 1), settings(epochs=3, patience=10), 24, checkpoint_dir=ck)
    assert rest.resumed_from == 2 and rest.stopped == "max epochs"
    assert [h["val_loss"] for h in rest.history] == [h["val_loss"] for h in full.history]
    # finished now: a further rerun trains nothing and says how it ended
    done = train_candidate(ws, Candidate("lstm", 8, 1), settings(epochs=3, patience=10), 24, checkpoint_dir=ck)
    assert done.resumed_from == 4 and done.stopped == "max epochs" and len(done.history) == 3


def test_the_loss_ignores_filled_targets():
    # a constant series the naive-anchored model forecasts exactly, but for filled cells set to 100:
    # with them masked, every loss is 0 (nothing to learn); scored as observations, they would not be
    n = 600
    df = pd.DataFrame(
        {
            "timestamp": pd.date_range("2022-01-01", periods=n, freq="h"),
            "y": np.full(n, 5.0),
            "x": np.cos(np.arange(n) / 3),
        }
    )
    df["filled:y"], df["filled:x"] = False, False
    for a in (100, 200, 300, 450, 520):  # in train, val and test targets
        df.loc[a : a + 2, "y"], df.loc[a : a + 2, "filled:y"] = 100.0, True
    point = settings(epochs=2, evaluate={"quantiles": []})  # a perfect point forecast: a loss of exactly 0
    ws = build_windows(df, variables=["y", "x"], targets=["y"], freq="h", settings=point)
    res = train_candidate(ws, Candidate("gru", 8, 1), point, anchor_season=1)
    assert res.initial_val_loss == 0.0 and all(h["train_loss"] == 0.0 and h["val_loss"] == 0.0 for h in res.history)


def test_an_epoch_of_a_short_series_passes_over_its_windows_several_times():
    from cellcast.pipeline.modeling.train import epoch_order

    # 87 training windows (17 years of months) and 8 batches of 256: 2048 draws, each window 23 or 24 times
    idx = epoch_order(87, 2048, torch.Generator().manual_seed(0))
    counts = np.bincount(idx.numpy(), minlength=87)
    assert len(idx) == 2048 and counts.min() >= 2048 // 87 and counts.max() <= -(-2048 // 87)
    # a long series: one permutation cut short, the draw it always was (the same weights as before)
    assert torch.equal(
        epoch_order(5000, 2048, torch.Generator().manual_seed(0)),
        torch.randperm(5000, generator=torch.Generator().manual_seed(0))[:2048],
    )
