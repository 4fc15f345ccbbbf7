"""torch -> ONNX export: metadata, dynamic batch and length, the unrolled RNN, the parity gate."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from cellcast.pipeline.data.datasets import load_bundled
from cellcast.pipeline.engine.inference import OnnxForecaster
from cellcast.pipeline.engine.onnx_export import (
    DEFAULT_VARIANT,
    HYBRID_MIN_BATCH,
    check_parity,
    export_checked,
    export_onnx,
)
from cellcast.pipeline.errors import ExportError
from cellcast.pipeline.modeling.anchor import theta_weights
from cellcast.pipeline.modeling.model import ModelSpec, build

LOOKBACK, HORIZON, VARS = 96, 12, ["Demand", "Temperature", "WorkDay"]


@pytest.fixture(scope="module")
def series() -> np.ndarray:
    """Real data: Victoria's half-hourly electricity demand, temperature and working-day flag."""
    return load_bundled("elecdemand")[VARS].to_numpy(np.float32)


def real_windows(series: np.ndarray, n: int, length: int = LOOKBACK, seed: int = 0) -> np.ndarray:
    starts = np.random.default_rng(seed).integers(0, len(series) - length, n)
    return np.stack([series[s : s + length] for s in starts])


def make_model(cell: str, series: np.ndarray, season: int | None = None, seed: int = 0, **spec_args):
    spec = ModelSpec(
        cell=cell,
        n_vars=3,
        target_idx=[0],
        lookback=LOOKBACK,
        horizon=HORIZON,
        hidden_size=16,
        num_layers=2,
        rnn_steps=24,
        anchor_season=season,
        mean=series.mean(0).tolist(),
        std=series.std(0).tolist(),
        **spec_args,
    )
    torch.manual_seed(seed)
    model = build(spec).eval()
    with torch.no_grad():  # random non-zero weights everywhere: an anchored head starts at zero, hiding the cell
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("cell,anchor", [("rnn", None), ("lstm", 48), ("gru", None), ("rnn", 48)])
def test_export_parity_dynamic_shapes_and_metadata(tmp_path, series, cell, anchor):
    model = make_model(cell, series, anchor)
    path = export_onnx(
        model,
        tmp_path / f"{cell}.onnx",
        {"variables": VARS, "targets": ["Demand"], "freq": "30min", "dataset": "elecdemand", "data_md5": "abc"},
    )
    res = check_parity(model, path, real_windows(series, 300))
    assert res.ok and res.n == 300 and res.max_rel_to_scale < 1e-4, res.reason
    assert "within tolerance" in res.reason

    engine = OnnxForecaster.from_path(path, device="cpu")
    for batch, length in [(1, LOOKBACK), (7, LOOKBACK + 13), (33, 3 * LOOKBACK)]:
        x = real_windows(series, batch, length, seed=batch)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = engine.predict(x)
        assert got.shape == (batch, HORIZON, 1)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * float(series[:, 0].std()))

    meta = engine.metadata
    assert meta["variables"] == VARS and meta["freq"] == "30min" and meta["data_md5"] == "abc"
    assert meta["lookback"] == LOOKBACK and meta["horizon"] == HORIZON and meta["cell"] == cell
    assert meta["spec"]["anchor_season"] == anchor and meta["spec"]["hidden_size"] == 16
    assert "cellcast_version" in meta


@pytest.mark.parametrize("seasons", [[12, 24, 48], [24, 48]])
def test_a_seasonal_median_anchor_and_a_residual_gate_export_with_parity(tmp_path, series, seasons):
    median = {"anchor": "seasonal_median", "anchor_seasons": seasons, "residual_gate": 0.5}
    model = make_model("gru", series, 24, **median)
    path = export_onnx(model, tmp_path / "median.onnx", {"variables": VARS, "targets": ["Demand"], "freq": "30min"})
    res = check_parity(model, path, real_windows(series, 300))
    assert res.ok and res.max_rel_to_scale < 1e-4, res.reason
    engine = OnnxForecaster.from_path(path, device="cpu")
    x = real_windows(series, 7, LOOKBACK + 13, seed=7)  # a longer input: the naives read its last seasons
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(engine.predict(x), ref, rtol=0, atol=1e-4 * float(series[:, 0].std()))
    assert engine.metadata["spec"]["anchor_seasons"] == seasons and engine.metadata["spec"]["residual_gate"] == 0.5


def test_a_theta_anchor_exports_as_a_linear_anchor_and_onnx_forecasts_the_theta_method(tmp_path, series):
    model = make_model("gru", series, 48, anchor="linear")
    rows = theta_weights(LOOKBACK, HORIZON, 48, 0.3)
    with torch.no_grad():  # the theta map on the lookback relative to its last value; the residual head at zero
        model.linear.weight.copy_(torch.from_numpy(rows.astype(np.float32)))
        model.linear.bias.zero_()
        model.head.weight.zero_()
        model.head.bias.zero_()
    path = export_onnx(model, tmp_path / "theta.onnx", {"variables": VARS, "targets": ["Demand"], "freq": "30min"})
    res = check_parity(model, path, real_windows(series, 300))
    assert res.ok and res.max_rel_to_scale < 1e-4, res.reason
    x = real_windows(series, 9, LOOKBACK + 5, seed=9)  # a longer input: the anchor reads its last LOOKBACK steps
    got = OnnxForecaster.from_path(path, device="cpu").predict(x)[:, :, 0]
    want = x[:, -LOOKBACK:, 0].astype(np.float64) @ rows.T
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(series[:, 0].std()))


def _ops(graph) -> set[str]:
    """Op types in a graph and its If branches."""
    ops = set()
    for n in graph.node:
        ops.add(n.op_type)
        for attr in n.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                ops |= _ops(attr.g)
    return ops


def test_default_variants_and_their_ops(tmp_path, series):
    ops, meta = {}, {}
    for cell in ("rnn", "lstm", "gru"):
        path = export_onnx(make_model(cell, series), tmp_path / f"{cell}.onnx", {})
        proto = onnx.load(str(path))
        ops[cell] = _ops(proto.graph)
        meta[cell] = OnnxForecaster.from_path(path, device="cpu").metadata
    assert "RNN" not in ops["rnn"] and {"MatMul", "Tanh"} <= ops["rnn"] and meta["rnn"]["export"] == "unrolled"
    for cell, native_op in (("lstm", "LSTM"), ("gru", "GRU")):
        assert meta[cell]["export"] == DEFAULT_VARIANT[cell]
        if DEFAULT_VARIANT[cell] == "hybrid":  # both graphs, chosen by batch size
            assert {"If", native_op, "Gemm", "Sigmoid"} <= ops[cell]
            assert meta[cell]["hybrid_min_batch"] == HYBRID_MIN_BATCH[cell]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("variant", ["native", "unrolled", "hybrid"])
def test_lstm_gru_variants_parity_ops_and_metadata(tmp_path, series, cell, variant):
    """Every variant against torch on real windows with random weights (GRU: the reset gate applied
    to W_hn h + b_hn, PyTorch's semantics), at batch sizes on both sides of the hybrid's switch."""
    model = make_model(cell, series, season=48 if cell == "gru" else None)
    path = export_onnx(model, tmp_path / f"{cell}-{variant}.onnx", {}, variant=variant, hybrid_min_batch=8)
    ops = _ops(onnx.load(str(path)).graph)
    native_op = cell.upper()
    if variant == "native":
        assert native_op in ops and "If" not in ops
    elif variant == "unrolled":
        assert native_op not in ops and {"Gemm", "Sigmoid", "Tanh", "Mul"} <= ops
    else:
        assert {"If", native_op, "Gemm", "Sigmoid"} <= ops
    res = check_parity(model, path, real_windows(series, 200))
    assert res.ok and res.max_rel_to_scale < 1e-4, res.reason

    engine = OnnxForecaster.from_path(path, device="cpu")
    assert engine.metadata["export"] == variant
    for batch, length in [(1, LOOKBACK), (7, LOOKBACK + 5), (8, LOOKBACK), (40, 2 * LOOKBACK)]:
        x = real_windows(series, batch, length, seed=batch)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(engine.predict(x), ref, rtol=0, atol=1e-4 * float(series[:, 0].std()))


def test_unknown_variant_is_a_one_line_error(tmp_path, series):
    with pytest.raises(ExportError, match="export variant: 'fused' is not one of native, unrolled, hybrid"):
        export_onnx(make_model("gru", series), tmp_path / "m.onnx", {}, variant="fused")


def test_parity_gate_rejects_a_different_model(tmp_path, series):
    model = make_model("gru", series, seed=0)
    other = make_model("gru", series, seed=1)
    windows = real_windows(series, 64)
    path = export_onnx(other, tmp_path / "other.onnx", {})
    res = check_parity(model, path, windows)
    assert not res.ok and res.max_rel_to_scale > 1e-3 and "NOT within" in res.reason

    # export_checked: passes for the right model, and a failure removes the file and says why
    good, res = export_checked(model, tmp_path / "good.onnx", {}, windows)
    assert good.is_file() and res.ok
    with pytest.raises(ExportError, match="parity gate failed"):
        export_checked(model, tmp_path / "bad.onnx", {}, windows, rtol=1e-12)
    assert not (tmp_path / "bad.onnx").exists()


def test_bad_example_shape_is_a_one_line_error(tmp_path, series):
    model = make_model("lstm", series)
    with pytest.raises(ExportError, match=r"expected shape \(batch, >= 96, 3\)"):
        export_onnx(model, tmp_path / "m.onnx", {}, example=np.zeros((2, 10, 3), np.float32))


def test_the_parity_gate_checks_every_branch_of_a_hybrid_graph(tmp_path, series):
    """A hybrid graph answers a single request with its native branch and large batches with the unrolled one:
    a wrong native branch must fail the gate even when every large batch is right."""
    from cellcast.pipeline.engine.onnx_export import _hybrid, _trace, export_model

    model, other = make_model("lstm", series, seed=0), make_model("lstm", series, seed=1)
    windows = real_windows(series, 300)
    x = torch.from_numpy(windows[:2])
    switch = HYBRID_MIN_BATCH["lstm"]
    good = export_onnx(model, tmp_path / "good.onnx", {})
    res = check_parity(model, good, windows)
    assert res.ok, res.reason
    assert [(b.name, b.batches) for b in res.branches] == [
        ("native", f"batch < {switch}"),
        ("unrolled", f"batch >= {switch}"),
    ]
    assert all(b.ok and b.n > 0 and b.max_rel_to_scale < 1e-4 for b in res.branches)
    assert res.branches[0].n == 300 and res.branches[1].n == 300  # every window through both paths
    assert "native, batch < 256" in res.reason and "unrolled, batch >= 256" in res.reason

    # the other model's native branch beside this model's unrolled one: right for batches >= 256 only
    bad = tmp_path / "bad.onnx"
    proto = _hybrid(_trace(other, x, "lstm"), _trace(export_model(model, True), x, "lstm"), switch)
    good_proto = onnx.load(str(good))
    proto.metadata_props.extend(good_proto.metadata_props)
    onnx.save(proto, str(bad))
    res = check_parity(model, bad, windows)
    native, unrolled = res.branches
    assert not res.ok and not native.ok and unrolled.ok, res.reason
    assert "native, batch < 256" in res.reason and "FAILED" in res.reason


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_a_one_path_graph_is_checked_at_batch_1_and_in_large_batches(tmp_path, series, cell):
    model = make_model(cell, series)
    path = export_onnx(model, tmp_path / "m.onnx", {}, variant="unrolled" if cell == "rnn" else "native")
    res = check_parity(model, path, real_windows(series, 40), batch=16)
    (branch,) = res.branches
    assert branch.name == ("unrolled" if cell == "rnn" else "native") and branch.n == 40 and res.ok


# ---------------------------------------------------------------- two inputs (x, future), two outputs (y, q)

LEVELS = [0.05, 0.1, 0.5, 0.9, 0.95]


def future_blocks(n: int, seed: int = 0) -> np.ndarray:
    """Known-future blocks: time of day as sin/cos (as the calendar gives it) and a 0/1 working-day flag."""
    rng = np.random.default_rng(seed)
    phase = rng.integers(0, 48, n)[:, None] + np.arange(HORIZON)[None, :]
    a = 2 * np.pi * phase / 48
    flag = (rng.random((n, 1)) < 0.7).repeat(HORIZON, 1)
    return np.stack([np.sin(a), np.cos(a), flag], -1).astype(np.float32)


def future_model(cell: str, series: np.ndarray, anchor: str = "linear", decoder: bool = True, seed: int = 0):
    from cellcast.pipeline.modeling.model import Forecaster

    spec = ModelSpec(
        cell=cell,
        n_vars=3,
        target_idx=[0],
        lookback=LOOKBACK,
        horizon=HORIZON,
        hidden_size=16,
        num_layers=2,
        rnn_steps=24,
        anchor_season=48,
        anchor=anchor,
        n_future=3,
        decoder=decoder,
        future_mean=[0, 0, 0.7],
        future_std=[1, 1, 0.46],
        quantiles=LEVELS,
        mean=series.mean(0).tolist(),
        std=series.std(0).tolist(),
    )
    model = Forecaster(spec).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random weights everywhere, the linear anchor and the quantile offsets included
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.02 if p.shape[-1] > 200 else 0.3))
        model.q_shift.copy_(torch.randn(model.q_shift.shape, generator=g) * 0.1 * float(series[:, 0].std()))
        model.q_scale.copy_(torch.randn(model.q_scale.shape, generator=g) * 0.05)  # times the forecast level
    return model


@pytest.mark.parametrize(
    "cell,variant", [("lstm", "hybrid"), ("gru", "unrolled"), ("rnn", "native"), ("rnn", "hybrid")]
)
def test_export_parity_with_two_inputs_and_two_outputs_on_every_branch(tmp_path, series, cell, variant):
    model = future_model(cell, series)
    windows, fut = real_windows(series, 300), future_blocks(300)
    path = export_onnx(
        model,
        tmp_path / "m.onnx",
        {"future_names": ["tod_sin", "tod_cos", "WorkDay"], "future_kinds": ["calendar", "calendar", "user"]},
        variant=variant,
        hybrid_min_batch=8 if variant == "hybrid" else None,
        future_example=fut[:2],
        example=windows[:2],
    )
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["x", "future"] and [o.name for o in proto.graph.output] == ["y", "q"]
    res = check_parity(model, path, windows, future=fut)
    assert res.ok and res.max_rel_to_scale < 1e-4, res.reason
    assert len(res.branches) == (2 if variant == "hybrid" else 1) and all(b.n == 300 for b in res.branches)

    engine = OnnxForecaster.from_path(path, device="cpu")
    assert engine.quantiles == LEVELS and engine.n_future == 3 and engine.future_kinds[-1] == "user"
    meta = engine.metadata
    assert meta["inputs"] == ["x", "future"] and meta["outputs"] == ["y", "q"] and meta["quantiles"] == LEVELS
    for batch in (1, 7, 40):
        x, f = real_windows(series, batch, seed=batch), future_blocks(batch, seed=batch)
        y, q, _ = engine.predict_all(x, f)
        assert y.shape == (batch, HORIZON, 1) and q.shape == (batch, HORIZON, 1, 5)
        # no crossing after export, on either branch: the order is part of the graph
        assert (np.diff(q, axis=-1) >= 0).all() and np.array_equal(q[..., 2], y)
    from cellcast.pipeline.engine.inference import InferenceInputError

    with pytest.raises(InferenceInputError, match="future: this model reads 3 known-future inputs"):
        engine.predict(windows[:2])
    with pytest.raises(InferenceInputError, match=r"future: expected shape \(2, 12, 3\)"):
        engine.predict(windows[:2], fut[:2, :5])


def test_the_parity_gate_checks_the_quantile_output_too(tmp_path, series):
    """A graph whose point forecast is right but whose quantiles are another model's fails the gate."""
    model = future_model("gru", series)
    other = copy_with_other_shift(model)
    windows, fut = real_windows(series, 64), future_blocks(64)
    path = export_onnx(other, tmp_path / "other.onnx", {}, variant="native", future_example=fut[:2])
    y_ref = model(torch.from_numpy(windows), torch.from_numpy(fut)).detach().numpy()
    assert np.allclose(OnnxForecaster.from_path(path, device="cpu").predict(windows, fut), y_ref, atol=1e-4)
    res = check_parity(model, path, windows, future=fut)
    assert not res.ok and "NOT within" in res.reason
    with pytest.raises(ExportError, match="pass their block"):
        check_parity(model, path, windows)


def copy_with_other_shift(model):
    import copy as _copy

    other = _copy.deepcopy(model)
    with torch.no_grad():
        other.q_shift.add_(float(model.target_scale()[0]) * 0.5)
    return other


def test_an_ensemble_exports_as_one_graph_with_every_members_cell(tmp_path, series):
    from cellcast.pipeline.modeling.model import Ensemble

    members = [future_model(c, series, seed=i) for i, c in enumerate(("gru", "lstm", "rnn"))]
    ens = Ensemble(members).eval()
    windows, fut = real_windows(series, 200), future_blocks(200)
    path = export_onnx(ens, tmp_path / "ens.onnx", {}, future_example=fut[:2])
    ops = _ops(onnx.load(str(path)).graph)
    assert {"If", "GRU", "LSTM", "RNN"} <= ops  # hybrid: the native branch holds every member's operator
    res = check_parity(ens, path, windows, future=fut)
    assert res.ok and [b.name for b in res.branches] == ["native", "unrolled"], res.reason
    engine = OnnxForecaster.from_path(path, device="cpu")
    assert engine.metadata["cell"] == "ensemble" and engine.metadata["hybrid_min_batch"] == HYBRID_MIN_BATCH["lstm"]
    y, q, _ = engine.predict_all(windows[:5], fut[:5])
    assert (np.diff(q, axis=-1) >= 0).all()
    assert engine.smoke_test().shape == (1, HORIZON, 1)
