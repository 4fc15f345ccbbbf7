"""bench/gpu_check.py's dry run on the CPU, so that the script a GPU session runs once cannot rot: it runs to the
end with only what the GPU machine has, and writes every record the GPU figures will be read from."""

from __future__ import annotations

import json
import sys

import pytest
from gpu_machine import ROOT, run_without_services

pytestmark = pytest.mark.integration  # the GPU check run as a process with the services made unimportable

SCRIPT = str(ROOT / "bench" / "gpu_check.py")
CELLS = ("lstm", "gru", "rnn")


def records(folder):
    return [json.loads(line) for line in (folder / "gpu_check.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    r = run_without_services(SCRIPT, ["--out", str(out), "--device", "cpu", "--quick"], timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, records(out)


def test_runs_to_the_end_without_the_services(dry_run):
    out, rows = dry_run
    errors = [r for r in rows if r["kind"] == "error"]
    assert not errors, errors
    assert rows[0]["kind"] == "env" and rows[-1]["kind"] == "end" and rows[-1]["errors"] == 0
    assert [r["name"] for r in rows if r["kind"] == "section"] == ["train", "ttq", "infer", "serve"]
    env = rows[0]
    assert env["device"] == "cpu" and env["quick"] is True and env["torch"] and env["ort_version"]
    doctor = next(r for r in rows if r["kind"] == "doctor")
    assert doctor["ok"] is True and doctor["device"] == "cpu" and "tf32" in doctor["torch"]
    summary = (out / "gpu_check.md").read_text()
    for heading in ("## Training windows/s", "## Time to a validation loss", "## Inference", "## Served batch 1"):
        assert heading in summary


def test_training_records(dry_run):
    _, rows = dry_run
    cfg = next(r for r in rows if r["kind"] == "config")
    train = [r for r in rows if r["kind"] == "train"]
    for cell in CELLS:
        seed = [r for r in train if r["cell"] == cell and r["loop"] == "seed"]
        ours = {r["batch"]: r for r in train if r["cell"] == cell and r["loop"] == "cellcast"}
        assert len(seed) == 1 and seed[0]["windows_per_s"] > 0 and seed[0]["batch"] == 64
        assert set(ours) == set(cfg["batches"])
        for r in ours.values():
            assert r["windows_per_s"] > 0 and r["vs_seed"] > 0 and r["val_loss"] > 0 and r["device"] == "cpu"
    target = next(r for r in rows if r["kind"] == "ttq-target")
    assert 0 < target["target_val_loss"] < target["seasonal_naive_val_loss"]
    ttq = [r for r in rows if r["kind"] == "ttq"]
    assert sorted((r["cell"], r["loop"]) for r in ttq) == sorted((c, lo) for c in CELLS for lo in ("seed", "cellcast"))
    for r in ttq:
        assert r["curve"] and r["best_val_loss"] == min(v for _, v in r["curve"])
        assert r["reached_s"] is None or r["best_val_loss"] <= r["target_val_loss"]
    # GPU targets are judged on a GPU only
    assert not [r for r in rows if r["kind"] == "target"]


def test_inference_records(dry_run):
    _, rows = dry_run
    for cell in CELLS:
        exports = [r for r in rows if r["kind"] == "export" and r["cell"] == cell]
        shipped = exports[0]
        assert shipped["variant"] == ("unrolled" if cell == "rnn" else "hybrid") and shipped["bytes"] > 0
        if cell != "rnn":
            assert shipped["hybrid_min_batch_cuda"] == "never"
        else:
            assert exports[1]["variant"] == "hybrid"
        engines = {r["engine"]: r for r in rows if r["kind"] == "infer" and r["cell"] == cell}
        assert set(engines) == {
            "torch-eager-cpu",
            "ort-shipped-cpu",
            "ort-hybrid-native-cpu",
            "ort-hybrid-unrolled-cpu",
        }
        for name, r in engines.items():
            assert r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["windows_per_s"] > 0
            if name.startswith("ort"):
                assert r["provider"] == r["used_batch1"] == r["used_batch"] == "CPUExecutionProvider"
                assert r["parity_ok"] and r["parity_rel_batch1"] <= 1e-3 and r["parity_rel_batch"] <= 1e-3
                assert r["vs_torch"] > 0
        assert engines["ort-hybrid-native-cpu"]["hybrid_min_batch"] == {"cpu": "never"}
        assert engines["ort-hybrid-unrolled-cpu"]["hybrid_min_batch"] == {"cpu": 1}
        choice = next(r for r in rows if r["kind"] == "branch-choice" and r["cell"] == cell)
        assert choice["timings"] and (
            choice["suggested_hybrid_min_batch"] == "never"
            or choice["suggested_hybrid_min_batch"] in [t["batch"] for t in choice["timings"]]
        )
        sweep = next(r for r in rows if r["kind"] == "cpu-threads" and r["cell"] == cell)["sweep"]
        assert [s["threads"] for s in sweep] == [1, "default"] and all(s["p50_ms"] > 0 for s in sweep)


def test_served_path_records(dry_run):
    _, rows = dry_run
    for cell in CELLS:
        engine = next(r for r in rows if r["kind"] == "serve-engine" and r["cell"] == cell)
        assert engine["provider"] == "CPUExecutionProvider" and engine["batch1_engine"] == "CPUExecutionProvider"
        serve = [r for r in rows if r["kind"] == "serve" and r["cell"] == cell]
        paths = {(r["path"], r.get("timestamps")) for r in serve}
        assert {("engine", None), ("parse+engine", False), ("parse+engine", True), ("http-asgi", None)} == paths
        http = next(r for r in serve if r["path"] == "http-asgi")
        assert "FastAPI not installed" in http["skipped"]  # as on the GPU machine
        assert all(r["p50_ms"] > 0 for r in serve if r["path"] != "http-asgi")


def test_the_service_over_http_where_fastapi_is_installed(tmp_path):
    import subprocess

    r = subprocess.run(
        [
            sys.executable,
            SCRIPT,
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
            "--quick",
            "--sections",
            "infer",
            "serve",
            "--cells",
            "rnn",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = records(tmp_path)
    assert not [x for x in rows if x["kind"] == "error"]
    http = next(x for x in rows if x["kind"] == "serve" and x["path"] == "http-asgi")
    assert http["p50_ms"] > 0 and 0 < http["engine_p50_ms"] <= http["p50_ms"]


def test_the_bundle_fits_each_call_under_the_limit(tmp_path):
    """bench/gpu_bundle.sh cuts the onnxruntime-gpu wheel so that every device call (the working tree + one part,
    the last one + .whl too) stays under the upload limit, and the parts put back together are the wheel.
    At a 10 MiB limit with a 25 MiB stand-in for the wheel (nothing is downloaded: both are already there)."""
    import hashlib
    import os
    import shutil
    import subprocess

    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    shutil.copy(ROOT / "bench" / "gpu_bundle.sh", repo / "bench")
    shutil.copy(ROOT / ".gitignore", repo)
    (repo / "README.md").write_bytes(os.urandom(300_000))  # the working tree that travels each time
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    whl, parts = repo / ".whl", repo / ".ortgpu-parts"
    whl.mkdir()
    parts.mkdir()
    for name in ("pydantic", "pydantic_core", "typing_inspection", "annotated_types", "typing_extensions"):
        (whl / f"{name}-0-py3-none-any.whl").write_bytes(os.urandom(200_000))
    wheel = parts / "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(os.urandom(25 * 2**20))
    env = {**os.environ, "PY": sys.executable, "UPLOAD_LIMIT_MIB": "10"}
    r = subprocess.run(["bash", "bench/gpu_bundle.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    pieces = sorted(parts.glob("ort.part.*"))
    assert len(pieces) == 3  # ceil((25 MiB + 1 MiB) / (9 MiB - tree))
    tree = (
        (repo / "README.md").stat().st_size
        + (repo / "bench" / "gpu_bundle.sh").stat().st_size
        + (repo / ".gitignore").stat().st_size
    )
    extra = sum(f.stat().st_size for f in whl.iterdir())
    limit = 10 * 2**20
    for k, p in enumerate(pieces):
        assert tree + p.stat().st_size + (extra if k == len(pieces) - 1 else 0) <= limit, p.name
    joined = b"".join(p.read_bytes() for p in pieces)
    assert joined == wheel.read_bytes()
    assert (whl / "ort-wheel.sha256").read_text().strip() == hashlib.sha256(joined).hexdigest()
    assert (whl / "ort-wheel.name").read_text().strip() == wheel.name
    assert "OVER THE LIMIT" not in r.stdout
    for k in range(len(pieces)):
        assert f"{k + 1}. carry" in r.stdout
    assert "bash bench/gpu_run.sh" in r.stdout and '".whl"' in r.stdout
