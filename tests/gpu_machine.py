"""Running cellcast as it runs on the lent GPU machine: its Python has torch, numpy, pandas, pyarrow, onnx,
pyyaml and typer, and gets pydantic and onnxruntime-gpu carried as wheels (`make gpu-bundle`); the services
are not there. A subprocess here gets the same view: importing any of them fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABSENT = ("mlflow", "prefect", "prefect_dask", "great_expectations", "dvc", "fastapi", "starlette", "uvicorn")


def run_without_services(target: str, args: list[str], cwd: Path | None = None, timeout: int = 300):
    """Run a script (a path) or a module (`-m name`) with `args` in a process where the services cannot be imported."""
    if target.startswith("-m "):
        start = f"runpy.run_module({target[3:]!r}, run_name='__main__', alter_sys=True)"
        argv0 = target[3:]
    else:
        start = f"runpy.run_path({target!r}, run_name='__main__')"
        argv0 = target
    code = (
        "import runpy, sys\n"
        f"for name in {ABSENT!r}:\n"
        "    sys.modules[name] = None   # `import name` now raises ImportError\n"
        f"sys.argv = {[argv0, *args]!r}\n" + start + "\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout
    )
