"""ONNX Runtime engine: providers actually used, GPU requests on a CPU host, input checks, smoke test."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cellcast.pipeline.engine import inference
from cellcast.pipeline.engine.inference import (
    CPU,
    CUDA,
    NEVER,
    GpuUnavailableError,
    InferenceInputError,
    ModelLoadError,
    OnnxForecaster,
    _gpu_present,
    pick_threshold,
)
from cellcast.pipeline.engine.onnx_export import export_onnx
from cellcast.pipeline.errors import CellcastError, NotFoundError
from cellcast.pipeline.modeling.model import ModelSpec, build

VARS = ["Demand", "Temperature"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    spec = ModelSpec(
        cell="lstm",
        n_vars=2,
        target_idx=[0],
        lookback=48,
        horizon=6,
        hidden_size=8,
        rnn_steps=12,
        mean=[4.0, 15.0],
        std=[0.8, 5.0],
    )
    torch.manual_seed(0)
    model = build(spec).eval()
    path = export_onnx(
        model, tmp_path_factory.mktemp("onnx") / "m.onnx", {"variables": VARS, "targets": ["Demand"], "freq": "30min"}
    )
    return model, path


def test_cpu_engine_predicts_like_torch_and_reads_metadata(exported):
    model, path = exported
    engine = OnnxForecaster.from_path(path, device="cpu", threads=1)
    assert engine.provider == CPU and engine.cpu_batch_threshold == 0
    assert (engine.lookback, engine.horizon, engine.n_vars) == (48, 6, 2)
    assert engine.variables == VARS and engine.targets == ["Demand"] and engine.metadata["freq"] == "30min"
    x = engine.synthetic_input(5)
    y, used = engine.predict_with_provider(x)
    assert used == CPU and engine.last_provider == CPU
    with torch.no_grad():
        np.testing.assert_allclose(y, model(torch.from_numpy(x)).numpy(), atol=1e-5)
    # a single window (time, vars) is accepted as a batch of one
    np.testing.assert_allclose(engine.predict(x[0]), y[:1], atol=1e-6)
    smoke = engine.smoke_test()
    assert smoke.shape == (1, 6, 1) and np.isfinite(smoke).all()


@pytest.mark.skipif(_gpu_present(), reason="checks the fallback of a host without a GPU")
def test_gpu_request_without_gpu_is_loud_or_an_error(exported, caplog):
    _, path = exported
    with caplog.at_level(logging.WARNING, logger="cellcast.pipeline.engine.inference"):
        engine = OnnxForecaster.from_path(path, device="cuda")
    assert engine.provider == CPU  # the provider ORT actually used, not the one asked for
    assert any("asked for a GPU" in r.getMessage() for r in caplog.records)
    with pytest.raises(GpuUnavailableError, match="asked for a GPU") as e:
        OnnxForecaster.from_path(path, device="auto", require_gpu=True)
    assert isinstance(e.value, CellcastError)
    # auto on a host without a GPU: CPU, quietly
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cellcast.pipeline.engine.inference"):
        assert OnnxForecaster.from_path(path).provider == CPU
    assert not caplog.records


def test_bad_inputs_are_one_line_errors(exported):
    _, path = exported
    engine = OnnxForecaster.from_path(path, device="cpu")
    with pytest.raises(InferenceInputError, match=r"expected shape \(batch, >= 48, 2\), got \(1, 47, 2\)"):
        engine.predict(np.zeros((1, 47, 2), np.float32))
    with pytest.raises(InferenceInputError, match="got \\(3, 48, 3\\)"):
        engine.predict(np.zeros((3, 48, 3), np.float32))
    x = engine.synthetic_input(2)
    x[1, 5, 0] = np.nan
    with pytest.raises(InferenceInputError, match="1 values are NaN"):
        engine.predict(x)


def test_missing_or_corrupt_files(tmp_path):
    with pytest.raises(NotFoundError, match="not found"):
        OnnxForecaster.from_path(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ModelLoadError, match="could not load"):
        OnnxForecaster.from_path(bad)
    with pytest.raises(CellcastError, match="device: 'tpu'"):
        OnnxForecaster.from_path(bad, device="tpu")


# --- the CUDA path, exercised on the CPU with test doubles of ONNX Runtime sessions -------------------
# The doubles stand for ORT's InferenceSession only; what is under test is cellcast's own decisions:
# which providers and options a session is asked for, which branch a hybrid graph takes on CUDA, where
# the CPU/CUDA threshold falls for given timings, and where each batch is sent.


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class FakeSession:
    """Answers like an ORT session; each run advances the fake clock by cost(batch) seconds."""

    def __init__(self, provider, cost, clock, meta, calls):
        self.provider, self.cost, self.clock, self.meta, self.calls = provider, cost, clock, meta, calls

    def get_providers(self):
        return [self.provider] + ([CPU] if self.provider == CUDA else [])

    def get_modelmeta(self):
        return SimpleNamespace(custom_metadata_map={k: json.dumps(v) for k, v in self.meta.items()})

    def get_inputs(self):
        return [SimpleNamespace(name="x", shape=["batch", "time", 2])]

    def get_outputs(self):
        return [SimpleNamespace(name="y")]

    def _answer(self, x):
        self.clock.t += self.cost(len(x))
        self.calls.append((self.provider, len(x)))
        return np.full((len(x), 6, 1), 1.0 if self.provider == CUDA else 2.0, np.float32)

    def run(self, names, feeds):
        return [self._answer(feeds["x"])]

    def io_binding(self):
        return FakeBinding()

    def run_with_iobinding(self, binding):
        binding.out = self._answer(binding.x)


class FakeBinding:
    def bind_cpu_input(self, name, x):
        self.x = x

    def bind_output(self, name, device, device_id):
        self.device = device

    def copy_outputs_to_cpu(self):
        return [self.out]


@pytest.fixture
def fake_ort(monkeypatch, tmp_path):
    """from_path on a 'GPU host': sessions are FakeSessions, each request recorded with its providers and the
    hybrid switch it was given. cuda_ok=False makes the CUDA session fall back to the CPU, as ORT does when a
    CUDA library is missing."""
    clock = FakeClock()
    made, calls = [], []
    state = {
        "cuda_ok": True,
        "cpu_cost": lambda b: 1e-3 + 1e-4 * b,
        "cuda_cost": lambda b: 3e-3 + 1e-6 * b,
        "meta": {
            "lookback": 48,
            "horizon": 6,
            "export": "hybrid",
            "hybrid_min_batch": 256,
            "hybrid_min_batch_cuda": NEVER,
            "spec": {"target_idx": [0], "n_vars": 2},
        },
    }
    real_override = inference._branch_override

    def open_session(model, so, providers, notes=None):
        asked_cuda = isinstance(providers[0], tuple) and providers[0][0] == CUDA
        provider = CUDA if asked_cuda and state["cuda_ok"] else CPU
        sess = FakeSession(
            provider, state["cuda_cost" if provider == CUDA else "cpu_cost"], clock, state["meta"], calls
        )
        made.append({"providers": providers, "switch": so._switch, "provider": provider})
        return sess

    def override(so, min_batch):
        so._switch = min_batch
        return real_override(ort.SessionOptions(), min_batch)  # the real call, on options nobody uses

    import onnxruntime as ort

    class Options(ort.SessionOptions):
        _switch = None

    monkeypatch.setattr(inference.ort, "SessionOptions", Options)
    monkeypatch.setattr(inference, "_open_session", open_session)
    monkeypatch.setattr(inference, "_branch_override", override)
    monkeypatch.setattr(inference, "_gpu_present", lambda: True)
    monkeypatch.setattr(inference, "missing_cuda_libraries", lambda: [] if state["cuda_ok"] else ["libcublasLt.so.13"])
    monkeypatch.setattr(inference.ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(inference, "_clock", clock)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the doubles never read it")
    return SimpleNamespace(path=path, made=made, calls=calls, state=state)


def test_cuda_sessions_run_with_tf32_off(fake_ort):
    engine = OnnxForecaster.from_path(fake_ort.path, device="cuda", cpu_batch_threshold=0)
    assert engine.provider == CUDA
    cuda = [m for m in fake_ort.made if isinstance(m["providers"][0], tuple)]
    assert len(cuda) == 1
    name, options = cuda[0]["providers"][0]
    assert name == CUDA and options["use_tf32"] == "0" and options["device_id"] == "0"
    assert cuda[0]["providers"][1:] == [CPU]
    # the CPU session beside it is asked for the CPU only
    assert [m["providers"] for m in fake_ort.made if m["provider"] == CPU] == [[CPU]]


def test_the_cuda_session_takes_the_exports_cuda_branch(fake_ort):
    engine = OnnxForecaster.from_path(fake_ort.path, device="cuda", cpu_batch_threshold=0)
    by_provider = {m["provider"]: m["switch"] for m in fake_ort.made}
    assert by_provider == {CPU: None, CUDA: NEVER}  # CPU: as exported (256); CUDA: the metadata's choice
    assert engine.hybrid_switch() == {"cpu": 256, "cuda": NEVER}
    assert engine.describe()["hybrid_min_batch"] == {"cpu": 256, "cuda": NEVER}
    # the engine option wins on both devices (measuring or gating one branch)
    fake_ort.made.clear()
    engine = OnnxForecaster.from_path(fake_ort.path, device="cuda", cpu_batch_threshold=0, hybrid_min_batch=1)
    assert {m["provider"]: m["switch"] for m in fake_ort.made} == {CPU: 1, CUDA: 1}
    assert engine.hybrid_switch() == {"cpu": 1, "cuda": 1}
    # not a hybrid export: the metadata's CUDA switch is not applied
    fake_ort.made.clear()
    fake_ort.state["meta"] = {**fake_ort.state["meta"], "export": "unrolled"}
    engine = OnnxForecaster.from_path(fake_ort.path, device="cuda", cpu_batch_threshold=0)
    assert {m["provider"]: m["switch"] for m in fake_ort.made} == {CPU: None, CUDA: None}
    assert engine.hybrid_switch() is None


def test_calibration_sends_small_batches_to_the_cpu(fake_ort):
    # CPU: 1 ms + 0.1 ms per window; CUDA: 3 ms + 1 us per window -> CUDA is ahead from ~21 windows
    engine = OnnxForecaster.from_path(fake_ort.path, device="cuda")
    assert engine.cpu_batch_threshold == 64
    assert [c["batch"] for c in engine.calibration] == [1, 4, 16, 64, 256]  # stopped after two CUDA wins
    assert engine.engine_for(1) == CPU and engine.engine_for(63) == CPU
    assert engine.engine_for(64) == CUDA and engine.engine_for(5000) == CUDA
    fake_ort.calls.clear()
    y, used = engine.predict_with_provider(np.zeros((1, 48, 2), np.float32))
    assert used == CPU and fake_ort.calls == [(CPU, 1)] and y[0, 0, 0] == 2.0
    y, used = engine.predict_with_provider(np.zeros((64, 48, 2), np.float32))
    assert used == CUDA and fake_ort.calls[-1] == (CUDA, 64) and y[0, 0, 0] == 1.0


def test_calibration_when_cuda_never_or_always_wins(fake_ort):
    fake_ort.state["cuda_cost"] = lambda b: 1.0  # a very slow GPU: everything measured stays on the CPU
    assert OnnxForecaster.from_path(fake_ort.path, device="cuda").cpu_batch_threshold == 2048
    fake_ort.state["cuda_cost"] = lambda b: 1e-5  # a GPU faster at every size
    engine = OnnxForecaster.from_path(fake_ort.path, device="cuda")
    assert engine.cpu_batch_threshold == 1 and engine.engine_for(1) == CUDA
    # a threshold given is used as is: no calibration runs
    fake_ort.calls.clear()
    engine = OnnxForecaster.from_path(fake_ort.path, device="cuda", cpu_batch_threshold=100)
    assert engine.cpu_batch_threshold == 100 and not fake_ort.calls and engine.calibration == []


def test_pick_threshold_ignores_a_lucky_small_batch():
    # CUDA won at batch 4 by chance, lost at 16 and 64, then won from 256 on
    timings = [(1, 5.0, 1.0), (4, 0.5, 1.0), (16, 6.0, 2.0), (64, 6.0, 5.0), (256, 7.0, 20.0), (1024, 8.0, 80.0)]
    assert pick_threshold(timings) == 256
    assert pick_threshold([(1, 2.0, 1.0), (4, 2.0, 1.0)]) == 8  # CUDA never ahead: beyond what was measured
    assert pick_threshold([(1, 1.0, 1.0), (4, 1.0, 2.0)]) == 1  # a tie goes to CUDA
    assert pick_threshold([]) == 0


def test_a_cuda_session_that_falls_back_is_reported_with_the_missing_library(fake_ort, caplog):
    fake_ort.state["cuda_ok"] = False
    with caplog.at_level(logging.WARNING, logger="cellcast.pipeline.engine.inference"):
        engine = OnnxForecaster.from_path(fake_ort.path, device="cuda")
    assert engine.provider == CPU and engine.cpu_batch_threshold == 0 and engine.engine_for(10**6) == CPU
    assert any("libcublasLt.so.13" in r.getMessage() for r in caplog.records)
    # the fallback serves with the CPU session (as exported), not the one built with the CUDA branch
    assert engine.hybrid_switch() == {"cpu": 256}
    with pytest.raises(GpuUnavailableError, match="CUDA libraries not found: libcublasLt.so.13"):
        OnnxForecaster.from_path(fake_ort.path, device="auto", require_gpu=True)


# --- the hybrid switch on real ONNX Runtime sessions ------------------------------------------------------


def _two_branch_model(path):
    """A graph shaped like onnx_export's hybrid: If(batch >= hybrid/min_batch) then x*2 else x*3."""
    import onnx
    from onnx import TensorProto, helper

    def out(n):
        return helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 2])

    def branch(name, k):
        return helper.make_graph(
            [helper.make_node("Mul", ["x", f"{name}/k"], [f"{name}/y"])],
            name,
            [],
            [out(f"{name}/y")],
            initializer=[helper.make_tensor(f"{name}/k", TensorProto.FLOAT, [], [k])],
        )

    nodes = [
        helper.make_node("Shape", ["x"], ["s"], start=0, end=1),
        helper.make_node("Squeeze", ["s"], ["b"]),
        helper.make_node("GreaterOrEqual", ["b", inference.HYBRID_THRESHOLD], ["big"]),
        helper.make_node("If", ["big"], ["y"], then_branch=branch("unrolled", 2.0), else_branch=branch("native", 3.0)),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [out("y")],
        initializer=[helper.make_tensor(inference.HYBRID_THRESHOLD, TensorProto.INT64, [], [4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_the_switch_override_picks_the_branch(tmp_path):
    import onnxruntime as ort

    path = tmp_path / "two.onnx"
    _two_branch_model(path)
    x = np.ones((8, 2), np.float32)

    def branch(switch, batch):
        so = ort.SessionOptions()
        keep = inference._branch_override(so, switch)  # noqa: F841 (lives as long as the session)
        sess = ort.InferenceSession(str(path), so, providers=[CPU])
        return {2.0: "unrolled", 3.0: "native"}[float(sess.run(None, {"x": x[:batch]})[0][0, 0])]

    assert branch(None, 8) == "unrolled" and branch(None, 2) == "native"  # as built: switch at 4
    assert branch(NEVER, 8) == "native"
    assert branch(1, 1) == "unrolled"
    with pytest.raises(CellcastError, match="hybrid_min_batch: '0'"):
        inference._branch_override(ort.SessionOptions(), 0)


def test_a_hybrid_export_records_its_cuda_switch_and_both_branches_agree(tmp_path):
    import onnx

    from cellcast.pipeline.engine.onnx_export import HYBRID_MIN_BATCH_CUDA
    from cellcast.pipeline.errors import ExportError

    spec = ModelSpec(
        cell="gru",
        n_vars=2,
        target_idx=[0],
        lookback=24,
        horizon=4,
        hidden_size=8,
        rnn_steps=8,
        mean=[4.0, 15.0],
        std=[0.8, 5.0],
    )
    torch.manual_seed(0)
    model = build(spec).eval()
    path = export_onnx(model, tmp_path / "h.onnx", {}, variant="hybrid")
    # the engine overrides the threshold by name: the export must still call it that
    assert inference.HYBRID_THRESHOLD in {i.name for i in onnx.load(str(path)).graph.initializer}
    native = OnnxForecaster.from_path(path, device="cpu", hybrid_min_batch=NEVER)
    unrolled = OnnxForecaster.from_path(path, device="cpu", hybrid_min_batch=1)
    assert native.metadata["hybrid_min_batch_cuda"] == HYBRID_MIN_BATCH_CUDA["gru"]
    assert native.hybrid_switch() == {"cpu": NEVER} and unrolled.hybrid_switch() == {"cpu": 1}
    x = native.synthetic_input(3)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(native.predict(x), ref, atol=1e-5)
    np.testing.assert_allclose(unrolled.predict(x), ref, atol=1e-5)
    path = export_onnx(model, tmp_path / "h2.onnx", {}, variant="hybrid", hybrid_min_batch_cuda=512)
    assert OnnxForecaster.from_path(path, device="cpu").metadata["hybrid_min_batch_cuda"] == 512
    with pytest.raises(ExportError, match="hybrid_min_batch_cuda: 'sometimes'"):
        export_onnx(model, tmp_path / "h3.onnx", {}, variant="hybrid", hybrid_min_batch_cuda="sometimes")


@pytest.mark.skipif(_gpu_present(), reason="checks a host without a GPU")
def test_the_cuda_probe_on_a_host_without_a_gpu_says_it_ran_on_the_cpu():
    probe = inference.probe_cuda_session()
    assert probe["ok"] is False and probe["provider"] == CPU
    libs = inference.preload_cuda()
    assert [n for n in libs] == [n for n, _ in inference.cuda_libraries()]
    assert set(inference.missing_cuda_libraries()) <= {n for n, r in libs.items() if r["required"]}


def test_a_cuda_engine_without_a_cpu_session_runs_every_batch_on_cuda(tmp_path):
    # built directly (not by from_path) with no CPU session beside it: a threshold cannot send a batch nowhere
    clock, calls = FakeClock(), []
    meta = {"lookback": 48, "horizon": 6, "spec": {"target_idx": [0], "n_vars": 2}}
    cuda = FakeSession(CUDA, lambda b: 1e-3, clock, meta, calls)
    engine = OnnxForecaster(tmp_path / "m.onnx", cuda, None, cpu_batch_threshold=64)
    assert engine.engine_for(1) == CUDA
    y, used = engine.predict_with_provider(np.zeros((1, 48, 2), np.float32))
    assert used == CUDA and calls == [(CUDA, 1)] and y.shape == (1, 6, 1)


def test_a_graph_with_no_fixed_variable_count_and_no_spec_is_a_load_error(tmp_path):
    from onnx import TensorProto, helper, save

    def io(n):
        return helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "time", "vars"])

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "foreign", [io("x")], [io("y")])
    path = tmp_path / "foreign.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what ONNX Runtime reads (onnx writes its newest)
    save(model, str(path))
    with pytest.raises(ModelLoadError, match="no fixed variable count"):
        OnnxForecaster.from_path(path, device="cpu")


def test_what_onnxruntime_prints_is_captured_per_thread_and_sys_stdout_is_left_as_others_set_it():
    """A model loaded in a background thread (the service's hot swap) captures onnxruntime's chatter without
    taking the output of other threads or putting back a stream somebody replaced meanwhile."""
    import io
    import sys
    import threading

    from cellcast.pipeline.engine.inference import _captured_stdout

    before = sys.stdout
    mine = io.StringIO()
    sys.stdout = mine
    try:
        inside, go, done = threading.Event(), threading.Event(), threading.Event()
        said = {}

        def loader():
            with _captured_stdout() as buf:
                print("EP Error: from the loader")
                inside.set()
                go.wait(5)
            said["loader"] = buf.getvalue()
            done.set()

        t = threading.Thread(target=loader)
        t.start()
        assert inside.wait(5)
        print("from the main thread")  # while the loader captures: still reaches this thread's stream
        go.set()
        assert done.wait(5)
        t.join()
        assert said["loader"] == "EP Error: from the loader\n"
        assert mine.getvalue() == "from the main thread\n"
        assert sys.stdout is mine  # put back

        # a caller replaces sys.stdout while the loader captures (a CLI runner): the loader leaves theirs in place
        inside.clear(), go.clear(), done.clear()
        t = threading.Thread(target=loader)
        t.start()
        assert inside.wait(5)
        theirs = io.StringIO()
        sys.stdout = theirs
        go.set()
        t.join()
        assert sys.stdout is theirs and said["loader"] == "EP Error: from the loader\n"
    finally:
        sys.stdout = before
