"""What this machine can run cellcast on, and why not: `cellcast doctor`.

Collects torch's view (build, CUDA, cuDNN, GPU, TF32, threads, one real training step on the GPU;
pipeline.modeling.device) and ONNX Runtime's (package, providers, the CUDA/cuDNN libraries it needs,
one real CUDA session; pipeline.engine.inference), then judges the device asked for:

    cpu    torch and onnxruntime import and run on the CPU
    cuda   torch trains on the GPU and ONNX Runtime opens a CUDA session
    auto   cuda when the machine has an NVIDIA GPU, else cpu: a GPU that neither can use is a failure,
           since `make run` would quietly train on the CPU

torch and onnxruntime are imported when asked, not with this module: the doctor must answer (and say
so) when either is missing or broken.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import CellcastError
from ..modeling.device import gpu_present, torch_report

INSTALL_HINT = "README.md, 'On a GPU'"


class DeviceUnavailableError(CellcastError):
    """The device asked for cannot be used on this machine."""


@dataclass
class Diagnosis:
    device: str  # what was asked: auto | cpu | cuda
    resolved: str  # what training and inference would run on: cpu | cuda
    ok: bool
    reason: str  # one line: why it works, or why not
    torch: dict = field(default_factory=dict)
    onnxruntime: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "resolved": self.resolved,
            "ok": self.ok,
            "reason": self.reason,
            "torch": self.torch,
            "onnxruntime": self.onnxruntime,
        }

    def raise_unless_ok(self) -> None:
        if not self.ok:
            raise DeviceUnavailableError(f"device {self.device}: {self.reason}")


def onnxruntime_report(probe_cuda: bool) -> dict:
    """The package, its providers and CUDA libraries; with probe_cuda, a real CUDA session (ORT logs its own
    failure to stderr, so it is tried only where a GPU is expected)."""
    try:
        from . import inference
    except Exception as e:  # not installed, or a broken build
        return {
            "installed": False,
            "error": f"import onnxruntime failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
        }
    out = {"installed": True, **inference.package_info()}
    if inference.CUDA in out["providers"]:
        out["cuda_libraries"] = inference.preload_cuda()
        out["cuda_session"] = inference.probe_cuda_session() if probe_cuda else None
    return out


def diagnose(device: str = "auto", smoke: bool = True) -> Diagnosis:
    """Probe torch and ONNX Runtime and judge `device` (auto | cpu | cuda)."""
    if device not in ("auto", "cpu", "cuda"):
        raise CellcastError(f"device '{device}': not one of auto, cpu, cuda")
    gpu = gpu_present()
    want_gpu = device == "cuda" or (device == "auto" and gpu)
    t = torch_report(smoke=smoke and want_gpu)
    # torch first: it loads the CUDA libraries it ships, which ONNX Runtime then finds
    o = onnxruntime_report(probe_cuda=want_gpu)
    ok, reason = _judge(device, gpu, want_gpu, t, o)
    return Diagnosis(
        device=device, resolved="cuda" if want_gpu else "cpu", ok=ok, reason=reason, torch=t, onnxruntime=o
    )


def _judge(device: str, gpu: bool, want_gpu: bool, t: dict, o: dict) -> tuple[bool, str]:
    if not t.get("installed"):
        return False, f"{t.get('error')}; install torch (README.md)"
    if not o.get("installed"):
        return False, f"{o.get('error')}; install onnxruntime-gpu (or onnxruntime on a machine without a GPU)"
    if not want_gpu:
        where = "no NVIDIA GPU on this machine" if not gpu else "train.device / --device is cpu"
        return True, f"training and inference run on the CPU ({where})"
    why = "" if device == "cuda" else "a GPU is present (/dev/nvidia*) but "
    if not t.get("cuda_build"):
        return False, (f"{why}torch {t['version']} is a CPU-only build: install a CUDA build of torch ({INSTALL_HINT})")
    if not t.get("cuda_available"):
        detail = t.get("cuda_error") or "no CUDA device visible (driver, CUDA_VISIBLE_DEVICES?)"
        return False, f"{why}torch {t['version']} (CUDA {t['cuda_build']}) cannot use it: {detail}"
    if t.get("cuda_error") or not str(t.get("smoke", "")).startswith("ok"):
        return False, f"{why}torch's training step on the GPU failed: {t.get('cuda_error') or t.get('smoke')}"
    if "CUDAExecutionProvider" not in o.get("providers", []):
        return False, (
            f"{why}{o['package']} {o['version']} has no CUDA provider: install onnxruntime-gpu ({INSTALL_HINT})"
        )
    s = o.get("cuda_session") or {}
    if not s.get("ok"):
        if s.get("missing"):
            detail = (
                f"CUDA libraries not found: {', '.join(s['missing'])} (onnxruntime-gpu {o['version']} is built "
                f"for CUDA {o.get('cuda_build')}: pip install 'onnxruntime-gpu[cuda,cudnn]', or a torch built for "
                f"the same CUDA)"
            )
        else:
            detail = s.get("error") or f"the session ran on {s.get('provider')}"
        return False, f"{why}ONNX Runtime's CUDA provider did not start: {detail}"
    return True, (
        f"training (torch {t['version']}) and inference (ONNX Runtime {o['version']}) run on "
        f"{t.get('gpu')} ({t.get('gpu_memory_gib')} GiB)"
    )


def render(d: Diagnosis) -> str:
    """The report as a person reads it."""
    t, o = d.torch, d.onnxruntime
    th = t.get("threads", {})
    lines = [
        f"device asked: {d.device} -> {d.resolved}   (NVIDIA GPU on this machine: {'yes' if gpu_present() else 'no'})"
    ]
    if t.get("installed"):
        lines.append(
            f"torch        {t['version']}   CUDA build: {t.get('cuda_build') or 'no (CPU only)'}   "
            f"CUDA available: {'yes' if t.get('cuda_available') else 'no'}"
        )
        if t.get("cuda_available"):
            lines.append(
                f"             GPU: {t.get('gpu')} ({t.get('gpu_memory_gib')} GiB, compute {t.get('capability')}), "
                f"{t.get('device_count')} device(s); cuDNN {t.get('cudnn')} "
                f"({'on' if t.get('cudnn_enabled') else 'off'}); bf16: {'yes' if t.get('bf16') else 'no'}"
            )
        if t.get("smoke"):
            lines.append(f"             smoke: {t['smoke']}")
        if t.get("cuda_error"):
            lines.append(f"             CUDA error: {t['cuda_error']}")
        lines.append(
            "             TF32: "
            + ", ".join(f"{k} {v}" for k, v in t.get("tf32", {}).items())
            + "   (cellcast sets ieee on CUDA: exact fp32)"
        )
        lines.append(
            f"             threads: torch intra-op {th.get('torch_intra_op')}, inter-op {th.get('torch_inter_op')}; "
            f"CPUs {th.get('cpus_usable')}/{th.get('cpus')}; OMP_NUM_THREADS={th.get('omp_num_threads')}, "
            f"OMP_WAIT_POLICY={th.get('omp_wait_policy')}"
        )
    else:
        lines.append(f"torch        not usable: {t.get('error')}")
    if o.get("installed"):
        lines.append(
            f"onnxruntime  {o['package']} {o['version']}"
            + (f" (built for CUDA {o['cuda_build']})" if o.get("cuda_build") else "")
            + f"   providers: {', '.join(o['providers'])}"
        )
        libs = o.get("cuda_libraries") or {}
        if libs:
            found = [n for n, r in libs.items() if r["loaded_from"]]
            missing = [n + ("" if r["required"] else " (optional)") for n, r in libs.items() if not r["loaded_from"]]
            lines.append(f"             CUDA libraries found: {', '.join(found) or 'none'}")
            if missing:
                lines.append(f"             CUDA libraries missing: {', '.join(missing)}")
        s = o.get("cuda_session")
        if s is None:
            lines.append("             CUDA session: not tried (no GPU expected)")
        elif s.get("ok"):
            lines.append(
                f"             CUDA session: runs on {s['provider']} (TF32 off; "
                f"max |diff| vs CPU {s.get('max_abs_diff', 0):.1e})"
            )
        else:
            lines.append(
                f"             CUDA session: failed, ran on {s.get('provider')}"
                + (f": {s['error']}" if s.get("error") else "")
            )
    else:
        lines.append(f"onnxruntime  not usable: {o.get('error')}")
    lines.append(f"verdict      {'ok' if d.ok else 'NOT OK'}: {d.reason}")
    return "\n".join(lines)
