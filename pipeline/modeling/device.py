"""The machine torch trains on: is there a GPU, what torch can do with it, and fp32 kept exact on it.

Nothing here imports torch at module level: the inference engine asks `gpu_present()` on hosts that
serve ONNX only, and `cellcast doctor` must still answer when torch itself is broken.
"""

from __future__ import annotations

import os
from pathlib import Path

# TF32 rounds fp32 matrix inputs to 10 mantissa bits on Ampere and later GPUs. cuDNN's RNNs use it
# by default: an fp32 forward on the GPU would then differ from the CPU and from ONNX Runtime by
# ~1e-3 of the scale, more than the parity gate allows. Training runs under bf16 autocast and does
# not care; every fp32 evaluation on the GPU does.
_FP32_FLAGS = ("cuda.matmul", "cudnn.conv", "cudnn.rnn")


def gpu_present() -> bool:
    """An NVIDIA device node exists and CUDA_VISIBLE_DEVICES does not hide it (no CUDA library needed)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()


def _precision_flags():
    """torch >= 2.9 has per-backend `fp32_precision` settings; older builds only the allow_tf32 switches.
    Reading the old switches after the new ones were set raises, so only one API is ever touched."""
    import torch

    b = torch.backends
    new = {
        "cuda.matmul": getattr(b.cuda.matmul, "fp32_precision", None),
        "cudnn.conv": getattr(getattr(b.cudnn, "conv", None), "fp32_precision", None),
        "cudnn.rnn": getattr(getattr(b.cudnn, "rnn", None), "fp32_precision", None),
    }
    return b, (None if None in new.values() else new)


def tf32_settings() -> dict[str, str]:
    """Where torch may use TF32 for fp32 work: {"cuda.matmul": "ieee" | "tf32", "cudnn.conv": .., "cudnn.rnn": ..}."""
    import torch

    b, new = _precision_flags()

    def tf(on):
        return "tf32" if on else "ieee"

    if new is not None:
        # "none" inherits: cuDNN's from cudnn.fp32_precision, then the global setting; at the end of the
        # chain matmuls follow set_float32_matmul_precision and cuDNN defaults to TF32
        inherited = [getattr(b.cudnn, "fp32_precision", "none"), getattr(b, "fp32_precision", "none")]
        out = {}
        for name, value in new.items():
            chain = [value] + (inherited if name.startswith("cudnn") else inherited[1:])
            value = next((v for v in chain if v != "none"), None)
            if value is None:
                value = tf(torch.get_float32_matmul_precision() != "highest") if name == "cuda.matmul" else "tf32"
            out[name] = value
        return out
    return {
        "cuda.matmul": tf(b.cuda.matmul.allow_tf32),
        "cudnn.conv": tf(b.cudnn.allow_tf32),
        "cudnn.rnn": tf(b.cudnn.allow_tf32),
    }


def exact_fp32(device) -> None:
    """On CUDA, fp32 matrix products, convolutions and RNNs in full fp32 (no TF32), process-wide.

    Called where a model is put on a GPU (training, evaluation): a forward pass in fp32 then matches
    the CPU and ONNX Runtime (whose CUDA sessions also run with TF32 off). Mixed precision (autocast)
    is unaffected. A no-op for any other device.
    """
    import torch

    if torch.device(device).type != "cuda":
        return
    b, new = _precision_flags()
    if new is not None:
        b.cuda.matmul.fp32_precision = "ieee"
        b.cudnn.conv.fp32_precision = "ieee"
        b.cudnn.rnn.fp32_precision = "ieee"
    else:
        b.cuda.matmul.allow_tf32 = False
        b.cudnn.allow_tf32 = False


def torch_report(smoke: bool = True) -> dict:
    """What torch can use on this machine. smoke: run one small LSTM training step on the GPU (cuDNN,
    bf16 autocast, fused Adam: what the trainer uses), so that "available" means "works"."""
    out: dict = {"installed": False, "gpu_present": gpu_present(), "threads": _thread_report()}
    try:
        import torch
    except Exception as e:  # a broken install is a finding, not a crash
        out["error"] = f"import torch failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        return out
    out.update(
        installed=True,
        version=torch.__version__,
        cuda_build=torch.version.cuda,
        cuda_available=False,
        tf32=tf32_settings(),
    )
    out["threads"].update(torch_intra_op=torch.get_num_threads(), torch_inter_op=torch.get_num_interop_threads())
    try:
        out["cuda_available"] = bool(torch.cuda.is_available())
    except Exception as e:
        out["cuda_error"] = str(e).splitlines()[0]
    if not out["cuda_available"]:
        return out
    try:
        props = torch.cuda.get_device_properties(0)
        out.update(
            device_count=torch.cuda.device_count(),
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cudnn=torch.backends.cudnn.version(),
            cudnn_enabled=bool(torch.backends.cudnn.enabled),
            bf16=bool(torch.cuda.is_bf16_supported()),
        )
        if smoke:
            out["smoke"] = _smoke_step(torch)
    except Exception as e:
        out["cuda_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return out


def _smoke_step(torch) -> str:
    dev = torch.device("cuda")
    rnn = torch.nn.LSTM(3, 8, 2, batch_first=True).to(dev)
    opt = torch.optim.Adam(rnn.parameters(), fused=True)
    x = torch.randn(4, 16, 3, device=dev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = rnn(x)[0].float().abs().mean()
    loss.backward()
    opt.step()
    torch.cuda.synchronize()
    if not torch.isfinite(loss):
        raise RuntimeError(f"the smoke step's loss is {float(loss)}")
    return "ok: LSTM step on cuDNN, bf16 autocast, fused Adam"


def _thread_report() -> dict:
    env = {
        k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "CUDA_VISIBLE_DEVICES")
    }
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"cpus": os.cpu_count(), "cpus_usable": usable, **{k.lower(): v for k, v in env.items()}}
