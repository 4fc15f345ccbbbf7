"""ONNX Runtime inference: sessions, providers, per-request engine choice. The only onnxruntime importer.

`OnnxForecaster.from_path(path)` opens an exported forecaster (pipeline.onnx_export) and reads its
metadata. On a GPU it keeps a CPU session beside the CUDA one: ONNX Runtime's CUDA recurrent ops
cost milliseconds per call at batch 1 (STACK.md: 3.5-5.4 ms on an H200 vs ~1-2 ms on CPU), so small
batches go to the CPU and large ones to the GPU. The threshold is measured at load by a short
calibration, or given.

CUDA sessions run with TF32 off (`use_tf32: 0`; ONNX Runtime enables it by default, which moves
results by ~1e-3 of the scale). A hybrid export (pipeline.engine.onnx_export) holds a native and an
unrolled graph behind an If on the batch size; its threshold was tuned on a CPU, so the metadata may
name another one for CUDA (`hybrid_min_batch_cuda`, or "never": the native operator at every size),
which the CUDA session gets by overriding the graph's `hybrid/min_batch` initializer.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import io
import json
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import CellcastError, NotFoundError
from ..modeling.device import gpu_present

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
CALIBRATION_BATCHES = (1, 4, 16, 64, 256, 1024)
# the If threshold of a hybrid graph (onnx_export._hybrid) and the value that keeps it on the native branch
HYBRID_THRESHOLD = "hybrid/min_batch"
NEVER = "never"
_INT64_MAX = np.iinfo(np.int64).max


class GpuUnavailableError(CellcastError):
    """A GPU was required but ONNX Runtime could not run the model on one."""


class InferenceInputError(CellcastError):
    """An input array does not have the shape or values the model needs."""


class ModelLoadError(CellcastError):
    """An ONNX file could not be loaded or failed its smoke forecast."""


_preload_lock = threading.Lock()
_preloaded: dict | None = None
_gpu_present = gpu_present  # looked up here at each load, so a test can stand in for a GPU host


def cuda_provider_options(device_id: int = 0) -> dict[str, str]:
    """Options of every CUDA session: TF32 off (ONNX Runtime's default is on), so results match the CPU."""
    return {"device_id": str(device_id), "use_tf32": "0"}


def cuda_libraries() -> list[tuple[str, bool]]:
    """The CUDA and cuDNN libraries this onnxruntime-gpu build loads, in loading order, with whether each
    is required (ONNX Runtime treats cuFFT and NVRTC as optional) -- from its build info: CUDA 13 -> .so.13."""
    try:
        from onnxruntime.capi import build_and_package_info as info

        major = int(str(getattr(info, "cuda_version", "") or "0").split(".")[0])
    except Exception:
        major = 0
    if not major:
        return []
    cufft = 12 if major >= 13 else 11
    return [
        (f"libcudart.so.{major}", True),
        (f"libcublasLt.so.{major}", True),
        (f"libcublas.so.{major}", True),
        ("libcurand.so.10", True),
        (f"libcufft.so.{cufft}", False),
        (f"libnvrtc.so.{major}", False),
        ("libcudnn.so.9", True),
    ]


def _candidates(soname: str) -> list[str]:
    """Where pip puts the library: nvidia/cu13/lib (CUDA 13 wheels), nvidia/<part>/lib (CUDA 12 wheels and
    cuDNN), torch/lib; under every entry of sys.path, so that a target-installed onnxruntime
    (`pip install --target`) still finds the libraries of the torch next to it."""
    found = []
    for entry in dict.fromkeys(p for p in sys.path if p and os.path.isdir(p)):
        for pattern in ("nvidia/*/lib", "torch/lib"):
            found += sorted(glob.glob(os.path.join(entry, pattern, soname)))
    return list(dict.fromkeys(found))


def _load(soname: str) -> tuple[str | None, str | None]:
    """(where it was loaded from, None) or (None, why not): the loader's search path first (or a copy already
    loaded, e.g. by `import torch`), then the pip folders."""
    try:
        ctypes.CDLL(soname, mode=ctypes.RTLD_GLOBAL)
        return "loader search path", None
    except OSError as e:
        error = str(e).splitlines()[0]
    for path in _candidates(soname):
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            return path, None
        except OSError as e:
            error = str(e).splitlines()[0]
    return None, error


class _ThreadStdout:
    """sys.stdout while some thread captures what onnxruntime prints: a capturing thread's writes go to its own
    buffer, every other thread's to the stream that was sys.stdout. contextlib.redirect_stdout swaps sys.stdout for
    the whole process: a model loaded in the service's background thread (a hot swap) took other threads' output
    and could put back a stream another caller had since replaced or closed."""

    def __init__(self, base):
        self.base = base
        self.local = threading.local()
        self.active = 0  # threads inside _captured_stdout

    def write(self, s: str) -> int:
        buf = getattr(self.local, "buf", None)
        return (buf if buf is not None else self.base).write(s)

    def flush(self) -> None:
        buf = getattr(self.local, "buf", None)
        (buf if buf is not None else self.base).flush()

    def __getattr__(self, name: str):
        return getattr(self.base, name)


_stdout_lock = threading.Lock()


@contextlib.contextmanager
def _captured_stdout():
    """What this thread prints to sys.stdout inside the block, in a StringIO; other threads print as before."""
    with _stdout_lock:
        proxy = sys.stdout
        if not isinstance(proxy, _ThreadStdout):
            proxy = sys.stdout = _ThreadStdout(sys.stdout)
        proxy.active += 1
    buf = io.StringIO()
    proxy.local.buf = buf
    try:
        yield buf
    finally:
        proxy.local.buf = None
        with _stdout_lock:  # the last one out puts the stream back, unless sys.stdout was replaced meanwhile
            proxy.active -= 1
            if sys.stdout is proxy and not proxy.active:
                sys.stdout = proxy.base


def preload_cuda() -> dict:
    """Load the CUDA/cuDNN libraries onnxruntime-gpu needs before a CUDA session is made.
    -> {soname: {"required": bool, "loaded_from": str | None, "error": str | None}} (done once per process)."""
    global _preloaded
    with _preload_lock:
        if _preloaded is None:
            if hasattr(ort, "preload_dlls"):
                # ONNX Runtime's own search (pip's nvidia packages beside it); it prints what it misses
                with _captured_stdout() as said:
                    try:
                        ort.preload_dlls()
                    except Exception:  # what is missing is found out below, library by library
                        log.debug("onnxruntime.preload_dlls failed", exc_info=True)
                if said.getvalue().strip():
                    log.debug("onnxruntime.preload_dlls: %s", said.getvalue().strip())
            _preloaded = {}
            for soname, required in cuda_libraries():
                where, error = _load(soname)
                _preloaded[soname] = {"required": required, "loaded_from": where, "error": error}
        return dict(_preloaded)


def missing_cuda_libraries() -> list[str]:
    """Required CUDA/cuDNN libraries that could not be loaded (after preload_cuda)."""
    return [name for name, r in preload_cuda().items() if r["required"] and r["loaded_from"] is None]


def _open_session(
    model: str | Path | bytes, so: ort.SessionOptions, providers: list, notes: list[str] | None = None
) -> ort.InferenceSession:
    """An InferenceSession; ONNX Runtime's fallback chatter on stdout ("EP Error ...", when the CUDA
    provider cannot start) goes to the log (and to `notes`), where the provider actually used is reported."""
    with _captured_stdout() as said:
        sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), so, providers=providers)
    text = " ".join(said.getvalue().split())
    if text:
        log.info("onnxruntime: %s", text[:500])
        if notes is not None:
            notes.append(text)
    return sess


def _branch_override(so: ort.SessionOptions, min_batch) -> ort.OrtValue | None:
    """Make the hybrid graph's If switch at `min_batch` (int, or NEVER: always the native branch).
    The returned OrtValue must outlive the session. A graph without the threshold ignores it."""
    if min_batch is None:
        return None
    if min_batch == NEVER:
        value = _INT64_MAX
    elif isinstance(min_batch, (int, np.integer)) and not isinstance(min_batch, bool) and min_batch >= 1:
        value = int(min_batch)
    else:
        raise CellcastError(f"hybrid_min_batch: '{min_batch}' is not a batch size >= 1 or '{NEVER}'")
    ov = ort.OrtValue.ortvalue_from_numpy(np.array(value, dtype=np.int64))
    so.add_initializer(HYBRID_THRESHOLD, ov)
    return ov


def _probe_model() -> tuple[bytes, np.ndarray]:
    """A tiny graph with the operators a forecaster needs from CUDA (an LSTM: cuDNN; a MatMul: cuBLAS)
    and an input for it."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    steps, batch, n_in, hidden = 6, 2, 3, 4
    init = {
        "W": rng.standard_normal((1, 4 * hidden, n_in)),
        "R": rng.standard_normal((1, 4 * hidden, hidden)),
        "B": rng.standard_normal((1, 8 * hidden)),
        "head": rng.standard_normal((hidden, 2)),
    }
    nodes = [
        helper.make_node("LSTM", ["x", "W", "R", "B"], ["", "h"], hidden_size=hidden),
        helper.make_node("MatMul", ["h", "head"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cellcast_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, batch, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, batch, 2])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in init.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString(), rng.standard_normal((steps, batch, n_in)).astype(np.float32)


def probe_cuda_session() -> dict:
    """Does a CUDA session really run here? Opens a tiny model with the CUDA provider (TF32 off, as the
    engine does) and compares it with the CPU. -> {"ok", "provider" (actually used), "max_abs_diff",
    "missing" (required CUDA libraries not found), "error" (ONNX Runtime's reason, when it gave one)}."""
    out: dict = {"ok": False, "provider": None, "missing": [], "error": None}
    if CUDA not in ort.get_available_providers():
        out["error"] = f"{package_info()['package']} has no CUDA provider (install onnxruntime-gpu)"
        return out
    out["missing"] = missing_cuda_libraries()
    model, x = _probe_model()
    notes: list[str] = []
    try:
        sess = _open_session(model, _session_options(None), [(CUDA, cuda_provider_options()), CPU], notes)
        out["provider"] = sess.get_providers()[0]
        y = sess.run(None, {"x": x})[0]
        ref = _open_session(model, _session_options(None), [CPU]).run(None, {"x": x})[0]
        out["max_abs_diff"] = float(np.abs(y - ref).max())
        out["ok"] = out["provider"] == CUDA and out["max_abs_diff"] < 1e-4
    except Exception as e:
        notes.append(f"{type(e).__name__}: {e}")
    if not out["ok"]:
        text = " ".join(notes)
        # ONNX Runtime's own line, e.g. "... libcublasLt.so.13: cannot open shared object file"
        out["error"] = text[text.find("EP Error") :][:300] if "EP Error" in text else (text[:300] or None)
    return out


def package_info() -> dict:
    """Which onnxruntime this is: the package (onnxruntime-gpu or the CPU-only onnxruntime), its version,
    the CUDA it was built for, and the providers it has."""
    try:
        from onnxruntime.capi import build_and_package_info as info

        package, cuda = getattr(info, "package_name", "onnxruntime"), getattr(info, "cuda_version", None)
    except Exception:
        package, cuda = "onnxruntime", None
    return {
        "package": package,
        "version": ort.__version__,
        "cuda_build": cuda or None,
        "providers": ort.get_available_providers(),
    }


def _session_options(threads: int | None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    return so


def _parse_metadata(props: dict[str, str]) -> dict:
    out = {}
    for k, v in props.items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


_clock = time.perf_counter  # calibration's clock (the tests give it a fake one)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = _clock()
        fn()
        times.append(_clock() - t0)
    return float(np.median(times))


def pick_threshold(timings: list[tuple[int, float, float]]) -> int:
    """The CPU/CUDA switch from calibration timings [(batch, cuda_s, cpu_s), ...] in increasing batch:
    the smallest batch from which CUDA is at least as fast at every larger batch measured, so that one
    lucky timing at a small size cannot send the sizes above it to the slower engine. CUDA behind at the
    largest size measured: twice that size (everything measured stays on the CPU)."""
    if not timings:
        return 0
    threshold = 2 * timings[-1][0]
    for batch, t_gpu, t_cpu in reversed(timings):
        if t_gpu > t_cpu:
            break
        threshold = batch
    return threshold


class OnnxForecaster:
    """An exported forecaster: (batch, time >= lookback, n_vars) float32 [+ future (batch, horizon, F)] ->
    (batch, horizon, n_targets) [+ quantiles (batch, horizon, n_targets, levels)]."""

    def __init__(
        self,
        path: Path,
        primary: ort.InferenceSession,
        cpu: ort.InferenceSession | None,
        cpu_batch_threshold: int = 0,
        branches: dict | None = None,
        pinned: list | None = None,
    ):
        self.path = Path(path)
        self._primary = primary
        self._cpu = cpu if cpu is not None else (primary if primary.get_providers()[0] == CPU else None)
        self.provider = primary.get_providers()[0]  # what ORT actually runs on, not what was asked
        # batches smaller than this run on the CPU session (only meaningful when the primary is CUDA)
        self.cpu_batch_threshold = int(cpu_batch_threshold) if self.provider == CUDA else 0
        # a hybrid graph's switch to its unrolled branch per device, 'cpu' / 'cuda' (None: as exported)
        self.branches = dict(branches or {})
        self._pinned = [v for v in (pinned or []) if v is not None]  # initializer overrides live as long as us
        self.calibration: list[dict] = []
        self.metadata = _parse_metadata(primary.get_modelmeta().custom_metadata_map)
        inputs = {i.name: i for i in primary.get_inputs()}
        inp = primary.get_inputs()[0]
        self.input_name = inp.name
        outputs = [o.name for o in primary.get_outputs()]
        self.output_name = outputs[0]
        # the known-future block, when the graph reads one, and the quantiles, when it forecasts them
        self.future_name = "future" if "future" in inputs else None
        self.quantile_name = "q" if "q" in outputs else None
        self.output_names = [self.output_name] + ([self.quantile_name] if self.quantile_name else [])
        spec = self.metadata.get("spec") or {}
        self.lookback = int(self.metadata.get("lookback") or spec.get("lookback") or 1)
        self.horizon = int(self.metadata.get("horizon") or spec.get("horizon") or 0)
        n_vars = inp.shape[2] if isinstance(inp.shape[2], int) else spec.get("n_vars")
        if n_vars is None:
            raise ModelLoadError(f"{path}: input '{inp.name}' has no fixed variable count and no spec.n_vars metadata")
        self.n_vars = int(n_vars)
        self.variables: list[str] = list(self.metadata.get("variables") or [f"x{i}" for i in range(self.n_vars)])
        n_targets = len(spec.get("target_idx") or []) or 1
        self.targets: list[str] = list(self.metadata.get("targets") or self.variables[:n_targets])
        self.quantiles: list[float] = (
            [float(q) for q in (self.metadata.get("quantiles") or [])] if self.quantile_name else []
        )
        fshape = inputs[self.future_name].shape if self.future_name else []
        self.n_future = (
            int(fshape[2])
            if len(fshape) == 3 and isinstance(fshape[2], int)
            else int(self.metadata.get("n_future") or spec.get("n_future") or 0)
        )
        # what the future block holds, column by column: "calendar" (computed from timestamps by whoever
        # forecasts) or "user" (values a user supplies), and the calendar that computes the first kind
        self.future_names: list[str] = list(self.metadata.get("future_names") or [])
        self.future_kinds: list[str] = list(self.metadata.get("future_kinds") or [])
        self.calendar: dict = dict(self.metadata.get("calendar") or {})
        self.last_provider: str | None = None
        self.loaded_at = datetime.now(UTC)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_path(
        cls,
        path: str | Path,
        device: str = "auto",
        require_gpu: bool = False,
        threads: int | None = None,
        cpu_batch_threshold: int | None = None,
        hybrid_min_batch: int | str | None = None,
    ) -> OnnxForecaster:
        """Open `path`. device: auto (CUDA if there is a GPU, else CPU) | cpu | cuda.

        require_gpu: raise GpuUnavailableError instead of falling back to the CPU.
        cpu_batch_threshold: on CUDA, batches below it run on a CPU session kept beside it;
        None measures it now (a short calibration), 0 sends everything to CUDA.
        hybrid_min_batch: for a hybrid export, the batch size from which every session runs the unrolled
        branch (or "never"), instead of the export's choice (as exported on the CPU; the metadata's
        `hybrid_min_batch_cuda` on CUDA). Measuring and gating each branch on either device use it.
        """
        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"{path}: ONNX model file not found")
        if device not in ("auto", "cpu", "cuda"):
            raise CellcastError(f"device: '{device}' is not one of auto, cpu, cuda")
        want_gpu = device == "cuda" or require_gpu or (device == "auto" and _gpu_present())
        pinned = []
        try:
            # the CPU session first: every engine keeps one (small batches, fallback), and its metadata
            # says which branch the CUDA session should take
            cpu_so = _session_options(threads)
            pinned.append(_branch_override(cpu_so, hybrid_min_batch))
            cpu_sess = primary = _open_session(path, cpu_so, [CPU])
            branches = {"cpu": hybrid_min_batch}
            missing: list[str] = []
            if want_gpu and CUDA in ort.get_available_providers():
                missing = missing_cuda_libraries()
                meta = _parse_metadata(cpu_sess.get_modelmeta().custom_metadata_map)
                on_cuda = hybrid_min_batch
                if on_cuda is None and meta.get("export") == "hybrid":
                    on_cuda = meta.get("hybrid_min_batch_cuda")
                gpu_so = _session_options(threads)
                pinned.append(_branch_override(gpu_so, on_cuda))
                sess = _open_session(path, gpu_so, [(CUDA, cuda_provider_options()), CPU])
                if sess.get_providers()[0] == CUDA:
                    primary, branches["cuda"] = sess, on_cuda
            used = primary.get_providers()[0]
            if want_gpu and used != CUDA:
                msg = (
                    f"{path}: asked for a GPU (device={device}) but ONNX Runtime runs this model on {used} "
                    f"(available: {', '.join(ort.get_available_providers())}"
                    + (f"; CUDA libraries not found: {', '.join(missing)}" if missing else "")
                    + ")"
                )
                if require_gpu:
                    raise GpuUnavailableError(msg)
                if device == "cuda":
                    log.warning("!!! %s; continuing on the CPU", msg)
                else:
                    log.info("%s; using the CPU", msg)
        except CellcastError:
            raise
        except Exception as e:  # corrupt/unsupported file: one line, no traceback
            raise ModelLoadError(f"{path}: ONNX Runtime could not load the model: {str(e).splitlines()[0]}") from e
        engine = cls(path, primary, cpu_sess, branches=branches, pinned=pinned)
        if engine.provider == CUDA:
            engine.cpu_batch_threshold = engine.calibrate() if cpu_batch_threshold is None else int(cpu_batch_threshold)
            log.info("%s: on CUDA; batches below %d run on the CPU", path.name, engine.cpu_batch_threshold)
        return engine

    # ---- running ------------------------------------------------------------------------------
    def _check(self, x: np.ndarray, future: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        x = np.asarray(x)
        if x.ndim == 2:  # one window
            x = x[None]
        if x.ndim != 3 or x.shape[2] != self.n_vars or x.shape[1] < self.lookback or x.shape[0] < 1:
            raise InferenceInputError(
                f"input: expected shape (batch, >= {self.lookback}, {self.n_vars}), got {tuple(x.shape)}"
            )
        x = np.ascontiguousarray(x, dtype=np.float32)
        bad = int((~np.isfinite(x)).sum())
        if bad:
            raise InferenceInputError(f"input: {bad} values are NaN or infinite; the model needs finite values")
        if not self.future_name:
            return x, None  # a model without known-future inputs reads none (a block given is not its)
        if future is None:
            raise InferenceInputError(
                f"future: this model reads {self.n_future} known-future inputs per horizon step "
                f"({', '.join(self.future_names) or 'unnamed'}): pass them for the horizon"
            )
        f = np.asarray(future)
        if f.ndim == 2:
            f = f[None]
        want = (len(x), self.horizon, self.n_future)
        if f.shape != want:
            raise InferenceInputError(f"future: expected shape {want}, got {tuple(f.shape)}")
        f = np.ascontiguousarray(f, dtype=np.float32)
        bad = int((~np.isfinite(f)).sum())
        if bad:
            raise InferenceInputError(f"future: {bad} values are NaN or infinite; the model needs finite values")
        return x, f

    def _feeds(self, x: np.ndarray, f: np.ndarray | None) -> dict:
        return {self.input_name: x, **({self.future_name: f} if self.future_name else {})}

    def _run_cpu(self, x: np.ndarray, f: np.ndarray | None = None) -> list[np.ndarray]:
        assert self._cpu is not None  # engine_for, smoke_test and calibrate route here only when it exists
        return self._cpu.run(self.output_names, self._feeds(x, f))

    def _run_cuda(self, x: np.ndarray, f: np.ndarray | None = None) -> list[np.ndarray]:
        # IO binding: the inputs are copied to the device once and the outputs read back once,
        # with no intermediate host copies. One binding per call keeps concurrent calls independent.
        binding = self._primary.io_binding()
        for name, value in self._feeds(x, f).items():
            binding.bind_cpu_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, "cuda", 0)
        self._primary.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def engine_for(self, batch: int) -> str:
        """The provider a batch of this size runs on."""
        if self.provider == CUDA and (batch >= self.cpu_batch_threshold or self._cpu is None):
            return CUDA
        return CPU

    def predict_all(self, x: np.ndarray, future: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, str]:
        """(point forecast, quantiles or None, the provider that ran it)."""
        x, f = self._check(x, future)
        used = self.engine_for(len(x))
        out = self._run_cuda(x, f) if used == CUDA else self._run_cpu(x, f)
        self.last_provider = used
        return out[0], (out[1] if len(out) > 1 else None), used

    def predict_with_provider(self, x: np.ndarray, future: np.ndarray | None = None) -> tuple[np.ndarray, str]:
        y, _, used = self.predict_all(x, future)
        return y, used

    def predict(self, x: np.ndarray, future: np.ndarray | None = None) -> np.ndarray:
        return self.predict_all(x, future)[0]

    def synthetic_input(self, batch: int = 1) -> np.ndarray:
        """A plausible input: the training mean plus noise of the training scale (zeros if unknown)."""
        spec = self.metadata.get("spec") or {}
        mean = np.asarray(spec.get("mean") or [0.0] * self.n_vars, dtype=np.float32)
        std = np.asarray(spec.get("std") or [1.0] * self.n_vars, dtype=np.float32)
        rng = np.random.default_rng(0)
        return (mean + 0.1 * std * rng.standard_normal((batch, self.lookback, self.n_vars))).astype(np.float32)

    def synthetic_future(self, batch: int = 1) -> np.ndarray | None:
        """A plausible known-future block: each column at its training mean (0 for calendar features)."""
        if not self.future_name:
            return None
        spec = self.metadata.get("spec") or {}
        members = spec.get("members") or [spec]
        mean = np.asarray(members[0].get("future_mean") or [0.0] * self.n_future, dtype=np.float32)
        return np.broadcast_to(mean, (batch, self.horizon, self.n_future)).astype(np.float32)

    def smoke_test(self) -> np.ndarray:
        """One forecast on every engine this model may use; raises ModelLoadError unless finite and well shaped."""
        x, f = self.synthetic_input(1), self.synthetic_future(1)
        outs = [self._run_cpu(x, f)] if self._cpu is not None else []
        if self.provider == CUDA:
            outs.append(self._run_cuda(x, f))
        want: list[tuple[int, ...]] = [(1, self.horizon, len(self.targets))]
        if self.quantile_name:
            want.append((1, self.horizon, len(self.targets), len(self.quantiles)))
        for out in outs:
            for y, shape in zip(out, want):
                if y.shape != shape or not np.isfinite(y).all():
                    raise ModelLoadError(
                        f"{self.path}: smoke forecast failed: expected finite values of shape "
                        f"{shape}, got shape {y.shape} with {int((~np.isfinite(y)).sum())} "
                        f"non-finite values"
                    )
        return outs[-1][0]

    def calibrate(self, batches=CALIBRATION_BATCHES, repeats: int = 5) -> int:
        """The batch size from which CUDA beats the CPU session (median of a few runs per size, see
        pick_threshold). Sizes run smallest first and stop once CUDA won at two sizes in a row: its lead
        only grows with the batch, and a CPU run at a large batch would cost the load most of its time."""
        if self.provider != CUDA or self._cpu is None:
            return 0
        timings = []
        for b in batches:
            x, f = self.synthetic_input(b), self.synthetic_future(b)
            self._run_cuda(x, f), self._run_cpu(x, f)  # warm-up (allocations, cuDNN plans)
            t_gpu = _median_time(lambda x=x, f=f: self._run_cuda(x, f), repeats)
            t_cpu = _median_time(lambda x=x, f=f: self._run_cpu(x, f), repeats)
            timings.append((b, t_gpu, t_cpu))
            log.debug("calibration batch %d: cuda %.3f ms, cpu %.3f ms", b, 1e3 * t_gpu, 1e3 * t_cpu)
            if len(timings) >= 2 and all(g <= c for _, g, c in timings[-2:]):
                break
        self.calibration = [
            {"batch": b, "cuda_ms": round(1e3 * g, 4), "cpu_ms": round(1e3 * c, 4)} for b, g, c in timings
        ]
        return pick_threshold(timings)

    def hybrid_switch(self) -> dict | None:
        """A hybrid graph's switch to its unrolled branch on each device in use ({"cpu": 256, "cuda": "never"});
        None for other exports."""
        if self.metadata.get("export") != "hybrid":
            return None
        exported = self.metadata.get("hybrid_min_batch")
        return {dev: exported if v is None else v for dev, v in self.branches.items()}

    def describe(self) -> dict:
        return {
            "path": str(self.path),
            "provider": self.provider,
            "cpu_batch_threshold": self.cpu_batch_threshold,
            "calibration": self.calibration,
            "export": self.metadata.get("export"),
            "hybrid_min_batch": self.hybrid_switch(),
            "lookback": self.lookback,
            "horizon": self.horizon,
            "variables": self.variables,
            "targets": self.targets,
            "quantiles": self.quantiles,
            "future": self.future_names,
            "loaded_at": self.loaded_at.isoformat(),
        }
