"""MLflow: runs, logged models, the model registry and its aliases. The only module that imports mlflow.

Default store: embedded sqlite `<root>/.cellcast/mlflow.db`, artifacts in `<root>/.cellcast/mlartifacts`;
`MLFLOW_TRACKING_URI` points everything at a tracking server instead.
One experiment per dataset (`cellcast/NAME`), one registered model per dataset (`NAME-forecaster`),
and three aliases: `champion` (what serves), `challenger` (the latest registered), `previous` (what
`rollback` goes back to). Promotion only moves aliases; versions are never edited or deleted.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.types import Schema, TensorSpec

from ..errors import NoChampionError, NotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from .promotion import Decision

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
STORE_DIR = ".cellcast"
RETRY_BASE_DELAY_S = 0.5

_lock = threading.Lock()
_state: dict[str, Any] = {"uri": None, "artifact_root": None, "root": None, "parents": []}


# ---------------------------------------------------------------- configuration

def configure(root: Path | str | None = None) -> str:
    """Point MLflow at $MLFLOW_TRACKING_URI, else at the embedded store under `root` (default: cwd)."""
    # a per-file progress bar on stderr clutters CLI and flow logs
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    env = _user_uri()
    root = Path(root or Path.cwd()).resolve()
    if env and env.startswith("sqlite:///"):
        # a store file named directly, or the embedded URI a parent process exported
        # (mlflow.set_tracking_uri sets the variable): artifacts beside the database, not ./mlruns
        db = Path(env[len("sqlite:///"):]).resolve()
        if db.parent.name == STORE_DIR:
            root = db.parent.parent
        (db.parent / "mlartifacts").mkdir(parents=True, exist_ok=True)
        uri, artifact_root = env, (db.parent / "mlartifacts").as_uri()
    elif env:
        uri, artifact_root = env, None  # the server decides where artifacts go
    else:
        base = root / STORE_DIR
        (base / "mlartifacts").mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{base / 'mlflow.db'}"
        artifact_root = (base / "mlartifacts").as_uri()
    with _lock:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        _state["uri"], _state["artifact_root"], _state["root"] = uri, artifact_root, root
    return uri


def _user_uri() -> str | None:
    """$MLFLOW_TRACKING_URI unless it is the embedded URI we set (mlflow.set_tracking_uri exports it)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and _state["artifact_root"] is not None and env == _state["uri"]:
        return None
    return env or None


def _ensure_configured() -> None:
    # a caller that never configured still lands in the project store, never in ./mlruns;
    # a server named in the environment since the last configure() takes over
    user = _user_uri()
    if _state["uri"] is None or (user is not None and user != _state["uri"]):
        configure()


def _client() -> MlflowClient:
    _ensure_configured()
    return MlflowClient(tracking_uri=_state["uri"], registry_uri=_state["uri"])


def experiment_name(dataset: str) -> str:
    return f"cellcast/{dataset}"


def _experiment_id(dataset: str) -> str:
    client = _client()
    name = experiment_name(dataset)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        location = f"{_state['artifact_root']}/{dataset}" if _state["artifact_root"] else None
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by a concurrent process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


# ---------------------------------------------------------------- runs

@contextmanager
def parent_run(dataset: str, run_name: str | None = None, tags: dict | None = None) -> Iterator[str]:
    """A run for one pipeline execution on `dataset`; candidates nest under it. Ends FAILED on an exception."""
    exp_id = _experiment_id(dataset)
    run = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=_str_tags(tags))
    rid = run.info.run_id
    with _lock:
        _state["parents"].append(rid)
    try:
        with _ending():
            yield rid
    finally:
        with _lock:
            if rid in _state["parents"]:
                _state["parents"].remove(rid)


@contextmanager
def _ending() -> Iterator[None]:
    """End the active run FINISHED, or FAILED when the block raises."""
    try:
        yield
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def _open_parent() -> str | None:
    # Prefect runs tasks in worker threads and MLflow's active run is per thread: fall back to the
    # most recent parent opened in this process so candidates still nest under it.
    active = mlflow.active_run()
    if active is not None:
        return active.info.run_id
    with _lock:
        return _state["parents"][-1] if _state["parents"] else None


@contextmanager
def candidate_run(name: str, params: dict | None = None, tags: dict | None = None) -> Iterator[str]:
    """A child run of the active parent for one candidate model."""
    parent = _open_parent()
    if parent is None:
        raise RuntimeError("candidate_run needs an open parent_run")
    exp_id = _client().get_run(parent).info.experiment_id
    run = mlflow.start_run(experiment_id=exp_id, run_name=name, nested=True, parent_run_id=parent,
                           tags=_str_tags(tags))
    rid = run.info.run_id
    with _ending():
        if params:
            log_params(params)
        yield rid


def _current_run_id() -> str:
    rid = _open_parent()
    if rid is None:
        # mlflow.log_* would silently start a run in the Default experiment: refuse instead
        raise RuntimeError("no active run: log inside parent_run or candidate_run")
    return rid


def _str_tags(tags: dict | None) -> dict[str, str] | None:
    return {str(k): str(v) for k, v in tags.items()} if tags else None


def log_params(params: dict) -> None:
    if params:
        mlflow.log_params({str(k): v for k, v in params.items()}, run_id=_current_run_id())


def log_metrics(metrics: dict, step: int | None = None) -> None:
    if metrics:
        mlflow.log_metrics({str(k): float(v) for k, v in metrics.items()}, step=step, run_id=_current_run_id())


def set_tags(tags: dict) -> None:
    rid = _current_run_id()
    client = _client()
    for k, v in (tags or {}).items():
        client.set_tag(rid, str(k), str(v))


def log_artifact(path, artifact_dir: str | None = None) -> None:
    _client().log_artifact(_current_run_id(), str(path), artifact_path=artifact_dir)


def log_figure(fig, artifact_file: str) -> None:
    _client().log_figure(_current_run_id(), fig, artifact_file)


def log_dict(d: dict, artifact_file: str) -> None:
    _client().log_dict(_current_run_id(), d, artifact_file)


# ---------------------------------------------------------------- logged models

def _flexible_spec(example: np.ndarray, name: str | None = None, tail: tuple[int, ...] | None = None) -> TensorSpec:
    """A float32 tensor spec whose batch and sequence dims are -1 (any); only the variable dims are fixed."""
    if tail is None:
        tail = tuple(int(d) for d in example.shape[2:])
    return TensorSpec(np.dtype(np.float32), (-1, -1, *tail), name)


def _check_example(input_example: np.ndarray) -> np.ndarray:
    x = np.asarray(input_example, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"input_example must be (batch, lookback, n_vars), got shape {x.shape}")
    if x.shape[0] < 2:
        # a batch-1 example lets some flavours pin the batch dimension to 1
        x = np.concatenate([x, x], axis=0)
    return x


def _onnx_io(onnx_path: Path) -> tuple[list[tuple[str, tuple]], list[tuple[str, tuple]]]:
    import onnx  # read the graph's declared inputs/outputs; symbolic dims come back as -1

    model = onnx.load(str(onnx_path), load_external_data=False)
    try:
        # the exporter leaves the forecast dims symbolic; inference recovers (horizon, targets)
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - the declared shapes are still a valid (looser) signature
        pass
    graph = model.graph

    def dims(vi):
        return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)

    return [(i.name, dims(i)) for i in graph.input], [(o.name, dims(o)) for o in graph.output]


def _requirements(*packages: str) -> list[str]:
    """Pinned requirements of the installed packages; stated, since MLflow's inference of them
    re-imports the model in a subprocess (~5 s per model)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for p in packages:
        try:
            out.append(f"{p}=={version(p).split('+')[0]}")
        except PackageNotFoundError:
            pass
    return out


def log_onnx_model(onnx_path: Path, input_example: np.ndarray, name: str = "onnx_model",
                   metadata: dict | None = None) -> str:
    """Log an ONNX file as an MLflow model of the active run; returns the model URI to register."""
    _current_run_id()
    onnx_path = Path(onnx_path)
    x = _check_example(input_example)
    inputs, outputs = _onnx_io(onnx_path)
    in_name, _ = inputs[0]
    out_name, out_dims = outputs[0]
    out_spec = TensorSpec(np.dtype(np.float32), (-1, *[(-1 if d <= 0 else d) for d in out_dims[1:]]), out_name)
    signature = ModelSignature(inputs=Schema([_flexible_spec(x, in_name)]), outputs=Schema([out_spec]))
    info = mlflow.onnx.log_model(
        onnx_model=onnx_path.read_bytes(),
        name=name,
        signature=signature,
        input_example={in_name: x},
        metadata={str(k): v for k, v in (metadata or {}).items()} or None,
        # one self-contained .onnx file: what download_model hands to inference
        save_as_external_data=False,
        onnx_execution_providers=["CPUExecutionProvider"],
        pip_requirements=_requirements("onnx", "onnxruntime-gpu", "onnxruntime", "numpy"),
    )
    return info.model_uri


def log_torch_model(model, input_example: np.ndarray, name: str = "pytorch_model") -> str:
    """Log the trained PyTorch module of the active run; returns its model URI.

    pickle, not the default pt2: torch.export fixes the batch and sequence dims from the example."""
    _current_run_id()
    import torch

    x = _check_example(input_example)
    model.eval()
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    signature = ModelSignature(inputs=Schema([_flexible_spec(x)]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *y.shape[1:]))]))
    # pickle is a deliberate choice (see above); MLflow warns about it on every call
    mlogger = logging.getLogger("mlflow.pytorch")
    level = mlogger.level
    mlogger.setLevel(logging.ERROR)
    try:
        info = mlflow.pytorch.log_model(model, name=name, signature=signature, input_example=x,
                                        serialization_format="pickle",
                                        pip_requirements=_requirements("torch", "numpy") + ["cellcast"])
    finally:
        mlogger.setLevel(level)
    return info.model_uri


# ---------------------------------------------------------------- registry

@dataclass
class VersionInfo:
    name: str
    version: int
    run_id: str
    source: str
    tags: dict = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)


def _info(mv) -> VersionInfo:
    return VersionInfo(name=mv.name, version=int(mv.version), run_id=mv.run_id or "", source=mv.source or "",
                       tags=dict(mv.tags or {}), aliases=sorted(mv.aliases or []))


def _missing(e: MlflowException) -> bool:
    # the sqlite store reports a missing alias as INVALID_PARAMETER_VALUE "... not found"
    return (e.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)
            or (e.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE) and "not found" in e.message))


def register_version(model_name: str, model_uri: str, run_id: str, tags: dict | None = None) -> int:
    """A new version of `model_name` from a logged model URI (the registered model is created on first use)."""
    client = _client()
    try:
        client.get_registered_model(model_name)
    except MlflowException as e:
        if not _missing(e):
            raise
        try:
            client.create_registered_model(model_name, description="cellcast forecaster; aliases: champion, "
                                           "challenger, previous")
        except MlflowException:  # a concurrent registration created it first
            client.get_registered_model(model_name)
    source = model_uri
    model_id = None
    if model_uri.startswith("models:/") and "@" not in model_uri and "/" not in model_uri[len("models:/"):]:
        # MLflow 3 logged-model URI: register its artifact location and keep the link to it
        model_id = model_uri[len("models:/"):]
        source = client.get_logged_model(model_id).artifact_location
    mv = client.create_model_version(model_name, source=source, run_id=run_id, tags=_str_tags(tags),
                                     model_id=model_id)
    return int(mv.version)


def get_alias(model_name: str, alias: str) -> VersionInfo | None:
    try:
        return _info(with_retry(_client().get_model_version_by_alias, model_name, alias))
    except MlflowException as e:
        if _missing(e):
            return None
        raise


def get_version(model_name: str, version: int) -> VersionInfo:
    try:
        return _info(with_retry(_client().get_model_version, model_name, str(int(version))))
    except MlflowException as e:
        if _missing(e):
            raise NotFoundError(f"model '{model_name}' has no version {version}") from None
        raise


def list_versions(model_name: str) -> list[VersionInfo]:
    """Every version of `model_name`, newest first; [] when the model does not exist."""
    client = _client()
    found = with_retry(client.search_model_versions, f"name = '{model_name}'")
    # search results may omit aliases on some stores: read each version fully
    return sorted((get_version(model_name, int(mv.version)) for mv in found), key=lambda v: -v.version)


def apply_decision(model_name: str, version: int, decision: "Decision") -> VersionInfo:
    """Record a promotion decision on `version` and move aliases accordingly (nothing else changes)."""
    client = _client()
    get_version(model_name, version)  # NotFoundError before anything moves
    tags = {"promotion.decision": "promoted" if decision.promote else "rejected",
            "promotion.reason": decision.reason}
    tags.update({f"promotion.{k}": "" if v is None else v for k, v in (decision.metrics or {}).items()})
    for k, v in tags.items():
        client.set_model_version_tag(model_name, str(version), k, str(v))
    client.set_registered_model_alias(model_name, CHALLENGER, str(version))
    if decision.promote:
        current = get_alias(model_name, CHAMPION)
        if current is not None and current.version != version:
            client.set_registered_model_alias(model_name, PREVIOUS, str(current.version))
        client.set_registered_model_alias(model_name, CHAMPION, str(version))
    return get_version(model_name, version)


def rollback(model_name: str) -> VersionInfo:
    """`previous` becomes champion; the replaced champion becomes `previous` (a second rollback undoes it)."""
    client = _client()
    champion = get_alias(model_name, CHAMPION)
    previous = get_alias(model_name, PREVIOUS)
    if previous is None:
        if champion is None:
            if not list_versions(model_name):
                raise NotFoundError(f"model '{model_name}' is not registered: nothing to roll back")
            raise NoChampionError(f"model '{model_name}' has no champion: nothing to roll back")
        raise NotFoundError(f"model '{model_name}' has no 'previous' version to roll back to "
                            f"(champion is v{champion.version})")
    client.set_registered_model_alias(model_name, CHAMPION, str(previous.version))
    if champion is not None and champion.version != previous.version:
        client.set_registered_model_alias(model_name, PREVIOUS, str(champion.version))
    return get_version(model_name, previous.version)


def download_model(model_name: str, alias_or_version: str | int,
                   dst: Path | None = None) -> tuple[Path, VersionInfo]:
    """The local .onnx file of a version (by alias or number), for inference without torch.

    Default `dst`: a cache beside the embedded store (versions never change, so a copy is reused)."""
    ref = str(alias_or_version)
    if ref.isdigit():
        info = get_version(model_name, int(ref))
    else:
        info = get_alias(model_name, ref)
        if info is None:
            if ref == CHAMPION:
                raise NoChampionError(f"no champion for model '{model_name}': train one with `cellcast train ...`")
            raise NotFoundError(f"model '{model_name}' has no alias '{ref}'")
    if dst is None:
        # keyed by store too: "v3" of another tracking server is another model
        store = hashlib.sha256(_state["uri"].encode()).hexdigest()[:8]
        dst = _state["root"] / STORE_DIR / "models" / store / model_name / f"v{info.version}"
    dst = Path(dst)
    found = sorted(dst.rglob("*.onnx")) if dst.is_dir() else []
    if not found:
        uri = f"models:/{model_name}/{info.version}"
        if dst.exists():
            with_retry(mlflow.artifacts.download_artifacts, artifact_uri=uri, dst_path=str(dst),
                       tracking_uri=_state["uri"])
        else:
            # download beside it and rename: a reader (the service polling the champion) never
            # sees a half-written copy
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
            try:
                with_retry(mlflow.artifacts.download_artifacts, artifact_uri=uri, dst_path=str(tmp),
                           tracking_uri=_state["uri"])
                try:
                    os.replace(tmp, dst)
                except OSError:  # another process finished first: use its copy
                    pass
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        found = sorted(dst.rglob("*.onnx"))
    if not found:
        raise NotFoundError(f"model '{model_name}' v{info.version} ({info.source}) holds no .onnx file")
    return found[0], info


# ---------------------------------------------------------------- retries

def _is_connection_error(exc: BaseException) -> bool:
    import requests
    import urllib3

    kinds = (ConnectionError, TimeoutError, requests.exceptions.ConnectionError, requests.exceptions.Timeout,
             urllib3.exceptions.NewConnectionError, urllib3.exceptions.ProtocolError)
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:  # MlflowException wraps the requests error
        if isinstance(e, kinds):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def with_retry(fn, *args, attempts: int = 3, **kw):
    """Call fn; retry only when the tracking server could not be reached (never on other errors)."""
    for i in range(attempts):
        try:
            return fn(*args, **kw)
        except Exception as e:
            if i == attempts - 1 or not _is_connection_error(e):
                raise
            delay = RETRY_BASE_DELAY_S * 2 ** i
            log.warning("tracking server unreachable (%s); retry %d/%d in %.1fs",
                        str(e).splitlines()[0][:120], i + 1, attempts - 1, delay)
            time.sleep(delay)


# ---------------------------------------------------------------- monitoring

MONITOR_KIND = "monitor"


def monitoring_run(dataset: str) -> str:
    """The one long-lived monitoring run of `dataset` (run name `monitor-NAME`, tag cellcast.kind=monitor),
    created on first use; its metrics are the monitor's figures over time."""
    client = _client()
    exp_id = _experiment_id(dataset)
    found = client.search_runs([exp_id], f"tags.`cellcast.kind` = '{MONITOR_KIND}'", max_results=1,
                               order_by=["attributes.start_time ASC"])
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=f"monitor-{dataset}",
                            tags={"cellcast.kind": MONITOR_KIND, "dataset": dataset})
    # FINISHED between updates: a run left RUNNING reads as one a killed process left open
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


def log_monitoring(run_id: str, metrics: dict, step: int, timestamp_ms: int, tags: dict | None = None) -> None:
    """One evaluation's figures on the monitoring run, at `step` and `timestamp_ms`; NaN figures are left out."""
    from mlflow.entities import Metric, RunTag

    ms = [Metric(str(k), float(v), int(timestamp_ms), int(step)) for k, v in metrics.items()
          if v is not None and np.isfinite(float(v))]
    ts = [RunTag(str(k), str(v)) for k, v in (tags or {}).items()]
    client = _client()
    for i in range(0, max(len(ms), 1), 1000):   # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=ms[i:i + 1000], tags=ts if i == 0 else [])
    client.set_terminated(run_id, status="FINISHED")


def run_tags(run_id: str) -> dict:
    return dict(_client().get_run(run_id).data.tags)


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of a run's metric, in step order."""
    return sorted((m.step, m.value) for m in _client().get_metric_history(run_id, key))
