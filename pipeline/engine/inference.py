"""ONNX Runtime inference: sessions, providers, per-request engine choice. The only onnxruntime importer.

`OnnxForecaster.from_path(path)` opens an exported forecaster (pipeline.onnx_export) and reads its
metadata. On a GPU it keeps a CPU session beside the CUDA one: ONNX Runtime's CUDA recurrent ops
cost milliseconds per call at batch 1 (STACK.md: 3.5-5.4 ms on an H200 vs ~1-2 ms on CPU), so small
batches go to the CPU and large ones to the GPU. The threshold is measured at load by a short
calibration, or given.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import CellcastError, NotFoundError

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
CALIBRATION_BATCHES = (1, 4, 16, 64, 256, 1024)


class GpuUnavailableError(CellcastError):
    """A GPU was required but ONNX Runtime could not run the model on one."""


class InferenceInputError(CellcastError):
    """An input array does not have the shape or values the model needs."""


class ModelLoadError(CellcastError):
    """An ONNX file could not be loaded or failed its smoke forecast."""


_preload_lock = threading.Lock()
_preloaded = False


def _gpu_present() -> bool:
    """Cheap check before asking ORT for CUDA under device='auto' (avoids its error spam on CPU hosts)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()


def _preload_cuda() -> None:
    # onnxruntime-gpu finds the CUDA/cuDNN libraries of the pip wheels (or torch's) only after this
    global _preloaded
    with _preload_lock:
        if not _preloaded and hasattr(ort, "preload_dlls"):
            try:
                ort.preload_dlls()
            except Exception:  # missing libraries surface again when the session is created
                log.debug("onnxruntime.preload_dlls failed", exc_info=True)
        _preloaded = True


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


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


class OnnxForecaster:
    """An exported forecaster: (batch, time >= lookback, n_vars) float32 -> (batch, horizon, n_targets)."""

    def __init__(self, path: Path, primary: ort.InferenceSession, cpu: ort.InferenceSession | None,
                 cpu_batch_threshold: int = 0):
        self.path = Path(path)
        self._primary = primary
        self._cpu = cpu if cpu is not None else (primary if primary.get_providers()[0] == CPU else None)
        self.provider = primary.get_providers()[0]   # what ORT actually runs on, not what was asked
        # batches smaller than this run on the CPU session (only meaningful when the primary is CUDA)
        self.cpu_batch_threshold = int(cpu_batch_threshold) if self.provider == CUDA else 0
        self.metadata = _parse_metadata(primary.get_modelmeta().custom_metadata_map)
        inp = primary.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = primary.get_outputs()[0].name
        spec = self.metadata.get("spec") or {}
        self.lookback = int(self.metadata.get("lookback") or spec.get("lookback") or 1)
        self.horizon = int(self.metadata.get("horizon") or spec.get("horizon") or 0)
        n_vars = inp.shape[2] if isinstance(inp.shape[2], int) else spec.get("n_vars")
        self.n_vars = int(n_vars)
        self.variables: list[str] = list(self.metadata.get("variables") or [f"x{i}" for i in range(self.n_vars)])
        n_targets = len(spec.get("target_idx") or []) or 1
        self.targets: list[str] = list(self.metadata.get("targets") or self.variables[:n_targets])
        self.last_provider: str | None = None
        self.loaded_at = datetime.now(timezone.utc)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_path(cls, path: str | Path, device: str = "auto", require_gpu: bool = False,
                  threads: int | None = None, cpu_batch_threshold: int | None = None) -> "OnnxForecaster":
        """Open `path`. device: auto (CUDA if there is a GPU, else CPU) | cpu | cuda.

        require_gpu: raise GpuUnavailableError instead of falling back to the CPU.
        cpu_batch_threshold: on CUDA, batches below it run on a CPU session kept beside it;
        None measures it now (a short calibration), 0 sends everything to CUDA.
        """
        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"{path}: ONNX model file not found")
        if device not in ("auto", "cpu", "cuda"):
            raise CellcastError(f"device: '{device}' is not one of auto, cpu, cuda")
        want_gpu = device == "cuda" or require_gpu or (device == "auto" and _gpu_present())
        so = _session_options(threads)
        try:
            cpu_sess = None
            if want_gpu and CUDA in ort.get_available_providers():
                _preload_cuda()
                primary = ort.InferenceSession(str(path), so, providers=[(CUDA, {"device_id": 0}), CPU])
            else:
                primary = ort.InferenceSession(str(path), so, providers=[CPU])
            used = primary.get_providers()[0]
            if want_gpu and used != CUDA:
                msg = (f"{path}: asked for a GPU (device={device}) but ONNX Runtime runs this model on {used} "
                       f"(available: {', '.join(ort.get_available_providers())})")
                if require_gpu:
                    raise GpuUnavailableError(msg)
                if device == "cuda":
                    log.warning("!!! %s; continuing on the CPU", msg)
                else:
                    log.info("%s; using the CPU", msg)
            if used == CUDA:
                cpu_sess = ort.InferenceSession(str(path), _session_options(threads), providers=[CPU])
        except CellcastError:
            raise
        except Exception as e:  # corrupt/unsupported file: one line, no traceback
            raise ModelLoadError(f"{path}: ONNX Runtime could not load the model: {str(e).splitlines()[0]}") from e
        engine = cls(path, primary, cpu_sess)
        if engine.provider == CUDA:
            engine.cpu_batch_threshold = (engine.calibrate() if cpu_batch_threshold is None
                                          else int(cpu_batch_threshold))
            log.info("%s: on CUDA; batches below %d run on the CPU", path.name, engine.cpu_batch_threshold)
        return engine

    # ---- running ------------------------------------------------------------------------------
    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == 2:  # one window
            x = x[None]
        if x.ndim != 3 or x.shape[2] != self.n_vars or x.shape[1] < self.lookback or x.shape[0] < 1:
            raise InferenceInputError(f"input: expected shape (batch, >= {self.lookback}, {self.n_vars}), "
                                      f"got {tuple(x.shape)}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        bad = int((~np.isfinite(x)).sum())
        if bad:
            raise InferenceInputError(f"input: {bad} values are NaN or infinite; the model needs finite values")
        return x

    def _run_cpu(self, x: np.ndarray) -> np.ndarray:
        return self._cpu.run([self.output_name], {self.input_name: x})[0]

    def _run_cuda(self, x: np.ndarray) -> np.ndarray:
        # IO binding: the input is copied to the device once and the output read back once,
        # with no intermediate host copies. One binding per call keeps concurrent calls independent.
        binding = self._primary.io_binding()
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        binding.bind_output(self.output_name, "cuda", 0)
        self._primary.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def engine_for(self, batch: int) -> str:
        """The provider a batch of this size runs on."""
        if self.provider == CUDA and batch >= self.cpu_batch_threshold:
            return CUDA
        return CPU

    def predict_with_provider(self, x: np.ndarray) -> tuple[np.ndarray, str]:
        x = self._check(x)
        used = self.engine_for(len(x))
        y = self._run_cuda(x) if used == CUDA else self._run_cpu(x)
        self.last_provider = used
        return y, used

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_with_provider(x)[0]

    def synthetic_input(self, batch: int = 1) -> np.ndarray:
        """A plausible input: the training mean plus noise of the training scale (zeros if unknown)."""
        spec = self.metadata.get("spec") or {}
        mean = np.asarray(spec.get("mean") or [0.0] * self.n_vars, dtype=np.float32)
        std = np.asarray(spec.get("std") or [1.0] * self.n_vars, dtype=np.float32)
        rng = np.random.default_rng(0)
        return (mean + 0.1 * std * rng.standard_normal((batch, self.lookback, self.n_vars))).astype(np.float32)

    def smoke_test(self) -> np.ndarray:
        """One forecast on every engine this model may use; raises ModelLoadError unless finite and well shaped."""
        x = self.synthetic_input(1)
        outs = [self._run_cpu(x)] if self._cpu is not None else []
        if self.provider == CUDA:
            outs.append(self._run_cuda(x))
        for y in outs:
            want = (1, self.horizon, len(self.targets))
            if y.shape != want or not np.isfinite(y).all():
                raise ModelLoadError(f"{self.path}: smoke forecast failed: expected finite values of shape {want}, "
                                     f"got shape {y.shape} with {int((~np.isfinite(y)).sum())} non-finite values")
        return outs[-1]

    def calibrate(self, batches=CALIBRATION_BATCHES, repeats: int = 5) -> int:
        """The smallest batch size at which CUDA beats the CPU (median of a few runs each)."""
        if self.provider != CUDA or self._cpu is None:
            return 0
        for b in batches:
            x = self.synthetic_input(b)
            self._run_cuda(x), self._run_cpu(x)   # warm-up (allocations, cuDNN plans)
            t_gpu = _median_time(lambda: self._run_cuda(x), repeats)
            t_cpu = _median_time(lambda: self._run_cpu(x), repeats)
            log.debug("calibration batch %d: cuda %.3f ms, cpu %.3f ms", b, 1e3 * t_gpu, 1e3 * t_cpu)
            if t_gpu <= t_cpu:
                return b
        return batches[-1] * 2

    def describe(self) -> dict:
        return {"path": str(self.path), "provider": self.provider, "cpu_batch_threshold": self.cpu_batch_threshold,
                "lookback": self.lookback, "horizon": self.horizon, "variables": self.variables,
                "targets": self.targets, "loaded_at": self.loaded_at.isoformat()}
