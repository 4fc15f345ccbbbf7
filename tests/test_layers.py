"""The shape of the code, kept true: the CLI above the flows above the library, the library's stage
packages in one order, each outside system behind one module, no import cycles, and a core that
imports without the services (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> the package it installs as (pyproject.toml [tool.setuptools] package-dir)
FOLDERS = {"pipeline": "cellcast.pipeline", "flows": "cellcast.flows", "cellcast": "cellcast"}

# the library's layers, lowest first: a module may import its own layer and those below
LAYERS = ["core", "data", "modeling", "engine", "registry", "monitoring", "serving"]
CORE = {
    "cellcast.pipeline",
    "cellcast.pipeline.config",
    "cellcast.pipeline.errors",
    "cellcast.pipeline.files",
    "cellcast.pipeline.catalog",
}

# each outside system is imported by one module (or one folder) only
OWNERS = {
    "mlflow": "cellcast.pipeline.registry.tracking",  # the package: server, runs, models, versions, monitoring
    "great_expectations": {"cellcast.pipeline.data.expectations"},
    "onnxruntime": {"cellcast.pipeline.engine.inference"},
    "dvc": {"cellcast.pipeline.data.versioning"},
    "sqlalchemy": {"cellcast.pipeline.data.database"},
    "holidays": {"cellcast.pipeline.data.calendar"},
    "statsmodels": {"cellcast.pipeline.modeling.classical"},
    "torch.onnx": {"cellcast.pipeline.engine.onnx_export"},
    "prefect": "cellcast.flows",
    "prefect_dask": "cellcast.flows",
}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def _imports(module: str, path: Path) -> set[str]:
    """Every module `module` imports, anywhere in its body (lazy imports inside functions count)."""
    is_pkg = path.name == "__init__.py"
    here = module.split(".") if is_pkg else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            # `from . import tracking` imports a module, `from .errors import X` a name
            found.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES)
    return found


MODULES = _modules()
GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _layer(module: str) -> str | None:
    if not module.startswith("cellcast.pipeline"):
        return None
    if module in CORE:
        return "core"
    return module.split(".")[2]


def test_no_module_claims_the_generic_top_level_names():
    bad = [(m, i) for m, imps in GRAPH.items() for i in imps if i.split(".")[0] in ("pipeline", "flows")]
    assert not bad, f"import cellcast.pipeline / cellcast.flows, not the bare names: {bad}"


def test_the_library_imports_neither_the_flows_nor_the_cli():
    for m, imps in GRAPH.items():
        if not m.startswith("cellcast.pipeline"):
            continue
        for i in imps:
            assert not i.startswith(("cellcast.flows", "cellcast.cli", "cellcast.commands", "prefect")), (m, i)


def test_the_flows_do_not_import_the_cli():
    for m, imps in GRAPH.items():
        if m.startswith("cellcast.flows"):
            assert not any(i.startswith(("cellcast.cli", "cellcast.commands")) for i in imps), m


def test_library_layers_import_only_downwards():
    for m, imps in GRAPH.items():
        mine = _layer(m)
        if mine is None:
            continue
        for i in imps:
            theirs = _layer(i)
            if theirs is not None:
                assert theirs in LAYERS, f"{i}: a package the layer list does not know ({LAYERS})"
                assert LAYERS.index(theirs) <= LAYERS.index(mine), f"{m} ({mine}) imports {i} ({theirs})"


def test_each_outside_system_has_one_owner():
    for m, imps in GRAPH.items():
        for system, owner in OWNERS.items():
            if any(i == system or i.startswith(system + ".") for i in imps):
                allowed = m.startswith(owner) if isinstance(owner, str) else m in owner
                assert allowed, f"{m} imports {system}; only {owner} may"


def test_no_import_cycles_in_the_library():
    lib = {
        m: {i for i in imps if i in MODULES and i != m}
        for m, imps in GRAPH.items()
        if m.startswith("cellcast.pipeline")
    }
    # a package's __init__ importing nothing of its own: edges to a package mean its __init__
    state: dict[str, int] = defaultdict(int)
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in lib.get(m, ()):
            if state[n] == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n) :] + [n]))
            if state[n] == 0:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(lib):
        if state[m] == 0:
            visit(m)


def test_every_package_folder_is_installed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert found == listed, f"pyproject.toml packages: missing {sorted(found - listed)}, stale {sorted(listed - found)}"


@pytest.mark.parametrize(
    "modules",
    [
        [
            "cellcast.pipeline.config",
            "cellcast.pipeline.data.window",
            "cellcast.pipeline.modeling.model",
            "cellcast.pipeline.modeling.train",
            "cellcast.pipeline.modeling.evaluate",
            "cellcast.pipeline.modeling.device",
            "cellcast.pipeline.engine.onnx_export",
            "cellcast.pipeline.engine.inference",
            "cellcast.pipeline.engine.doctor",
            "cellcast.pipeline.serving.requests",
        ],
    ],
)
def test_the_core_imports_without_the_services(modules):
    """What a GPU check needs runs where only torch, numpy, pandas, onnx and onnxruntime are."""
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "bad = sorted(s for s in ('mlflow', 'prefect', 'great_expectations', 'dvc', 'fastapi') if s in sys.modules)\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"the core imported {out.stdout.strip()}"


def test_the_doctor_imports_torch_and_onnxruntime_only_when_asked():
    """`cellcast doctor` must answer where torch or onnxruntime is missing or broken: neither comes with the import."""
    code = (
        "import sys\nimport cellcast.pipeline.engine.doctor, cellcast.pipeline.modeling.device\n"
        "print(','.join(sorted(m for m in ('torch', 'onnxruntime') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing the doctor imported {out.stdout.strip()}"


def test_only_the_library_and_the_flows_import_under_the_package_name():
    """cellcast.pipeline and cellcast.flows are the package's; the checkout's other folders are not."""
    import importlib

    import cellcast

    assert importlib.import_module("cellcast.pipeline").__name__ == "cellcast.pipeline"
    for folder in ("tests", "bench", "docs", "infra"):
        with pytest.raises(ImportError):
            importlib.import_module(f"cellcast.{folder}")
    assert all(p.endswith("cellcast") for p in cellcast.__path__), cellcast.__path__
