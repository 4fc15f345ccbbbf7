"""MLflow: runs, logged models, the model registry and its aliases. The only module that imports mlflow.

Default store: embedded sqlite `<root>/.cellcast/mlflow.db`, artifacts in `<root>/.cellcast/mlartifacts`;
`MLFLOW_TRACKING_URI` points everything at a tracking server instead.
One experiment per dataset (`cellcast/NAME`), one registered model per dataset (`NAME-forecaster`),
and three aliases: `champion` (what serves), `challenger` (the latest registered), `previous` (what
`rollback` goes back to). Promotion only moves aliases; versions are never edited or deleted.

Reaching a tracking server: one retry mechanism, MLflow's own per-request HTTP retries, bounded by
params.yaml `registry.retry_seconds` / `request_timeout_s` (set here as the MLFLOW_HTTP_REQUEST_*
variables, which MLflow reads at every request). Each retry logs one line; when they run out, every
public function here raises TrackingUnavailableError (one line naming the server), never MLflow's chain.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.types import ColSpec, Schema, TensorSpec

from ..config import RegistryConfig
from ..errors import NoChampionError, NotFoundError, RegistryBusyError, TrackingUnavailableError
from ..files import owner, owner_gone

if TYPE_CHECKING:  # pragma: no cover
    from .promotion import Decision

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
STORE_DIR = ".cellcast"
MAX_RETRIES = 10  # MLflow refuses more (_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT)

_lock = threading.Lock()
_state: dict[str, Any] = {
    "uri": None,
    "artifact_root": None,
    "root": None,
    "source": None,
    "parents": [],
    "policy": None,
    "ready": set(),
    "exported": set(),
}


# ---------------------------------------------------------------- reaching the server: retries, errors


@dataclass(frozen=True)
class RetryPolicy:
    """MLflow's HTTP retries for one request: `retries` tries after the first, waiting
    backoff * 2**(k-1) seconds before try k >= 2 (urllib3's schedule, no jitter, so the bound is exact)."""

    retries: int
    backoff: int
    timeout_s: int

    @property
    def waits(self) -> list[float]:
        # urllib3 caps one wait at Retry.DEFAULT_BACKOFF_MAX (120 s)
        return [0.0 if k == 1 else float(min(120, self.backoff * 2 ** (k - 1))) for k in range(1, self.retries + 1)]

    @property
    def wait_s(self) -> float:
        return sum(self.waits)

    @classmethod
    def within(cls, seconds: float, timeout_s: int) -> RetryPolicy:
        """The schedule that waits longest without passing `seconds` (more tries on a tie); 0: no retry."""
        best = cls(0, 0, timeout_s)
        if seconds <= 0:
            return best
        for backoff in range(1, 121):  # MLflow takes whole seconds, at most 120
            for n in range(1, MAX_RETRIES + 1):
                p = cls(n, backoff, timeout_s)
                if p.wait_s <= seconds and (p.wait_s, p.retries) > (best.wait_s, best.retries):
                    best = p
        return best

    def apply(self) -> None:
        # read by MLflow at every request (mlflow.utils.rest_utils.http_request)
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.retries)
        os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(self.backoff)
        os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(self.timeout_s)

    def describe(self) -> str:
        return (
            f"{self.retries} retries over {self.wait_s:.0f} s, {self.timeout_s} s per request "
            f"(params.yaml registry.retry_seconds, registry.request_timeout_s)"
        )


def retry_policy() -> RetryPolicy:
    _ensure_configured()
    return _state["policy"]


class _RetryLog(logging.Filter):
    """urllib3 logs each connection retry as a bare warning on its own logger; for requests to the tracking
    server this turns it into one line of ours (the server, the attempt, the wait), so a wait is never silent."""

    @classmethod
    def install(cls) -> None:
        lg = logging.getLogger("urllib3.connectionpool")
        if not any(isinstance(f, cls) for f in lg.filters):
            lg.addFilter(cls())

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Retrying (") or not isinstance(record.args, tuple) or len(record.args) < 3:
            return True
        retry, err, url = record.args[:3]
        server = _state["uri"] or ""
        host = re.match(r"https?://([^/:]+)(?::(\d+))?", server)
        # a refused connection names its host; a reset one does not, but the path is MLflow's REST API
        ours = host is not None and (
            f"host='{host.group(1)}'" in repr(err)
            or str(url).startswith(("/api/2.0/mlflow", "/api/3.0/mlflow", "/ajax-api/"))
        )
        if not ours:
            return True  # another server's retry: not ours to reword
        k = len(getattr(retry, "history", ()) or ())
        p = _state["policy"]
        wait = retry.get_backoff_time() if hasattr(retry, "get_backoff_time") else 0.0
        log.warning(
            "tracking server %s: %s; retry %d/%d in %.0f s (at most %.0f s of waiting in all, registry.retry_seconds)",
            server,
            _reason(err if isinstance(err, BaseException) else str(err)),
            k,
            p.retries if p else k,
            wait,
            p.wait_s if p else 0,
        )
        return False


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:  # MlflowException wraps the requests error
        out.append(e)
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return out


def _is_connection_error(exc: BaseException) -> bool:
    import requests
    import urllib3

    kinds = (
        ConnectionError,
        TimeoutError,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.RetryError,
        urllib3.exceptions.NewConnectionError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.MaxRetryError,
    )
    chain = _chain(exc)
    if any(isinstance(e, kinds) for e in chain):
        return True
    # MLflow re-raises some of them as text only: "API request to ... failed with exception HTTPConnectionPool..."
    text = str(chain[0])
    return isinstance(exc, MlflowException) and ("Max retries exceeded" in text or "timeout exception" in text)


def _reason(err: BaseException | str) -> str:
    text = " ".join(str(e) for e in (_chain(err) if isinstance(err, BaseException) else [])) or str(err)
    if "refused" in text.lower():
        return "connection refused"
    if "reset by peer" in text.lower() or "connection aborted" in text.lower():
        return "connection reset"
    if "timed out" in text.lower() or "timeout" in text.lower():
        return f"no answer within {(_state['policy'] or RetryPolicy(0, 0, 0)).timeout_s} s"
    if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
        return "host name not found"
    m = re.search(r"too many (\d+) error responses", text)
    if m:
        return f"it answers HTTP {m.group(1)}"
    return re.sub(r"\s+", " ", text)[:160]


def _unreachable(exc: BaseException) -> TrackingUnavailableError:
    p = _state["policy"]
    tried = f"gave up after {p.describe()}" if p else "gave up"
    return TrackingUnavailableError(f"tracking server {_state['uri']} unreachable ({_reason(exc)}); {tried}")


def _reaching(fn):
    """Connection failures that outlived MLflow's retries -> TrackingUnavailableError (one line)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TrackingUnavailableError:
            raise
        except Exception as e:
            if not _is_connection_error(e):
                raise
            raise _unreachable(e) from e

    return wrapper


@_reaching
def _start_run(**kwargs):
    return mlflow.start_run(**kwargs)


@_reaching
def _end_run(status: str) -> None:
    mlflow.end_run(status=status)


def _drop_active_run() -> None:
    """Forget this thread's active run without waiting on the server (end_run pops it before calling out)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    with _lock:
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"], os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "0", "2"
        try:
            mlflow.end_run(status="FAILED")
        except Exception:  # noqa: BLE001 - unreachable, as expected; the run stays RUNNING (see _ending)
            pass
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@_reaching
def check_reachable() -> str:
    """One cheap request to the store (within the retry budget): fail before hours of work, not after."""
    _client().search_experiments(max_results=1)
    return _state["uri"]


# ---------------------------------------------------------------- runs a killed process left open

OWNER_TAGS = ("cellcast.host", "cellcast.pid", "cellcast.process_started")


def _owner() -> dict[str, str]:
    return {f"cellcast.{k}": v for k, v in owner().items()}


def _orphaned(run) -> bool:
    """A RUNNING run whose owning process, on this host, is gone (or is another process with its pid)."""
    tags = run.data.tags
    return owner_gone({k[len("cellcast.") :]: v for k, v in tags.items() if k in OWNER_TAGS})


@_reaching
def end_orphans(dataset: str) -> list[str]:
    """End KILLED the runs of `dataset`'s experiment left RUNNING by a process of this host that is gone
    (kill -9, a lost machine session), with a tag saying why; returns their ids. Runs of live processes
    (a concurrent train) and of other hosts are left alone."""
    client = _client()
    exp = client.get_experiment_by_name(experiment_name(dataset))
    if exp is None:
        return []
    running = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
    ended = []
    for run in running:
        if not _orphaned(run):
            continue
        t = run.data.tags
        reason = (
            f"process {t['cellcast.pid']} on {t['cellcast.host']} ended without closing this run "
            f"(killed?); found by process {os.getpid()}"
        )
        client.set_tag(run.info.run_id, "cellcast.ended_reason", reason)
        client.set_terminated(run.info.run_id, status="KILLED")
        ended.append(run.info.run_id)
        log.warning(
            "run %s (%s) was left RUNNING by a process that is gone: ended KILLED", run.info.run_id, run.info.run_name
        )
    return ended


# ---------------------------------------------------------------- configuration


def configure(root: Path | str | None = None, registry: RegistryConfig | None = None) -> str:
    """Point MLflow at $MLFLOW_TRACKING_URI, else at the embedded store under `root` (default: cwd).

    registry: the retry settings (params.yaml `registry`); kept for later calls that pass none."""
    # a per-file progress bar on stderr clutters CLI and flow logs
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if registry is not None or _state["policy"] is None:
        _state["policy"] = RetryPolicy.within(*_retry_settings(registry or RegistryConfig()))
    _state["policy"].apply()
    env = _user_uri()
    root = Path(root or Path.cwd()).resolve()
    if env and env.startswith("sqlite:///"):
        # a store file named directly, or the embedded URI a parent process exported
        # (mlflow.set_tracking_uri sets the variable): artifacts beside the database, not ./mlruns
        db = Path(env[len("sqlite:///") :]).resolve()
        if db.parent.name == STORE_DIR:
            root = db.parent.parent
        (db.parent / "mlartifacts").mkdir(parents=True, exist_ok=True)
        uri, artifact_root, source = env, (db.parent / "mlartifacts").as_uri(), "env"
    elif env:
        uri, artifact_root, source = env, None, "env"  # the server decides where artifacts go
    else:
        source = "embedded"
        base = root / STORE_DIR
        (base / "mlartifacts").mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{base / 'mlflow.db'}"
        artifact_root = (base / "mlartifacts").as_uri()
    if uri.startswith("sqlite:///") and uri not in _state["ready"]:
        _create_store(uri)
    with _lock:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        _state["uri"], _state["artifact_root"], _state["root"], _state["source"] = uri, artifact_root, root, source
        if source == "embedded":
            _state["exported"].add(uri)
    if uri.startswith(("http://", "https://")):
        _RetryLog.install()
    return uri


def _create_store(uri: str) -> None:
    """Open a sqlite store once under a file lock: MLflow creates or migrates its tables on first use, and two
    processes doing that at once (two trains started together on a new project) fail in alembic."""
    from ..files import exclusive

    db = Path(uri[len("sqlite:///") :])
    with exclusive(db.with_name(f".{db.name}.lock")):
        MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
    _state["ready"].add(uri)


def _retry_settings(registry: RegistryConfig) -> tuple[float, int]:
    return registry.retry_seconds, registry.request_timeout_s


def tracking_uri() -> str:
    """The store in use (configuring the default one first if nothing was configured)."""
    _ensure_configured()
    return _state["uri"]


def server_url() -> str | None:
    """The tracking server's URL when MLflow talks to one over HTTP, else None (an embedded store)."""
    uri = tracking_uri()
    return uri if uri.startswith(("http://", "https://")) else None


UI_DEFAULT = "http://127.0.0.1:5000"  # where `cellcast ui` serves an embedded store


def ui_links(
    dataset: str, run_ids: dict[str, str], model_name: str | None = None, version: int | None = None
) -> dict[str, str]:
    """MLflow UI addresses of runs ({label: run id}) of `dataset`'s experiment and of a registered version:
    on the tracking server, or where `cellcast ui` serves the embedded store."""
    base = server_url() or UI_DEFAULT
    exp = _experiment_id(dataset)
    links = {label: f"{base}/#/experiments/{exp}/runs/{rid}" for label, rid in run_ids.items() if rid}
    if model_name and version:
        links[f"{model_name} v{version}"] = f"{base}/#/models/{model_name}/versions/{version}"
    return links


def _user_uri() -> str | None:
    """$MLFLOW_TRACKING_URI unless it is an embedded URI this process chose and exported
    (mlflow.set_tracking_uri sets the variable). A store the user named stays the user's: a later
    configure() keeps it."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env in _state["exported"]:
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


@_reaching
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
    """A run for one pipeline execution on `dataset`; candidates nest under it. Ends FAILED on an exception.

    The run is tagged with the process that owns it (host, pid, process start time); runs of this
    dataset left RUNNING by a process that is gone (killed) are ended KILLED first (`end_orphans`)."""
    exp_id = _experiment_id(dataset)
    end_orphans(dataset)
    run = _start_run(experiment_id=exp_id, run_name=run_name, tags=_str_tags({**(tags or {}), **_owner()}))
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
    """End the active run FINISHED, or FAILED when the block raises. With the server unreachable the run
    is only dropped here (another round of retries would double the wait): it stays RUNNING on the
    server until the next run of its dataset finds its process gone and ends it KILLED."""
    try:
        yield
    except BaseException as e:
        if isinstance(e, TrackingUnavailableError) or _is_connection_error(e):
            _drop_active_run()
        else:
            _end_run("FAILED")
        raise
    else:
        _end_run("FINISHED")


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
    exp_id = _reaching(lambda: _client().get_run(parent).info.experiment_id)()
    run = _start_run(
        experiment_id=exp_id,
        run_name=name,
        nested=True,
        parent_run_id=parent,
        tags=_str_tags({**(tags or {}), **_owner()}),
    )
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


@_reaching
def log_params(params: dict) -> None:
    if params:
        mlflow.log_params({str(k): v for k, v in params.items()}, run_id=_current_run_id())


@_reaching
def log_metrics(metrics: dict, step: int | None = None) -> None:
    if metrics:
        mlflow.log_metrics({str(k): float(v) for k, v in metrics.items()}, step=step, run_id=_current_run_id())


@_reaching
def set_tags(tags: dict) -> None:
    rid = _current_run_id()
    client = _client()
    for k, v in (tags or {}).items():
        client.set_tag(rid, str(k), str(v))


@_reaching
def log_artifact(path, artifact_dir: str | None = None) -> None:
    _client().log_artifact(_current_run_id(), str(path), artifact_path=artifact_dir)


@_reaching
def log_figure(fig, artifact_file: str) -> None:
    _client().log_figure(_current_run_id(), fig, artifact_file)


@_reaching
def log_dict(d: dict, artifact_file: str) -> None:
    _client().log_dict(_current_run_id(), d, artifact_file)


@_reaching
def log_table(frame, artifact_file: str) -> None:
    """A table (pandas DataFrame) as a run artifact the MLflow UI shows as one (a `.json` artifact_file)."""
    _client().log_table(_current_run_id(), frame, artifact_file)


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


@_reaching
def log_onnx_model(
    onnx_path: Path,
    input_example: np.ndarray,
    name: str = "onnx_model",
    metadata: dict | None = None,
    future_example: np.ndarray | None = None,
) -> str:
    """Log an ONNX file as an MLflow model of the active run; returns the model URI to register.
    A graph that reads known-future inputs (`future`) gets them in its signature and example; one that forecasts
    quantiles declares its second output (`q`)."""
    _current_run_id()
    onnx_path = Path(onnx_path)
    x = _check_example(input_example)
    inputs, outputs = _onnx_io(onnx_path)
    in_name, _ = inputs[0]
    in_specs: list[ColSpec | TensorSpec] = [_flexible_spec(x, in_name)]
    example = {in_name: x}
    for extra, dims in inputs[1:]:  # the known-future block: (batch, horizon, F)
        f = _future_example(future_example, len(x), dims)
        in_specs.append(TensorSpec(np.dtype(np.float32), (-1, *f.shape[1:]), extra))
        example[extra] = f
    out_specs: list[ColSpec | TensorSpec] = [
        TensorSpec(np.dtype(np.float32), (-1, *[(-1 if d <= 0 else d) for d in dims[1:]]), out) for out, dims in outputs
    ]
    signature = ModelSignature(inputs=Schema(in_specs), outputs=Schema(out_specs))
    info = mlflow.onnx.log_model(
        onnx_model=onnx_path.read_bytes(),
        name=name,
        signature=signature,
        input_example=example,
        metadata={str(k): v for k, v in (metadata or {}).items()} or None,
        # one self-contained .onnx file: what download_model hands to inference
        save_as_external_data=False,
        onnx_execution_providers=["CPUExecutionProvider"],
        pip_requirements=_requirements("onnx", "onnxruntime-gpu", "onnxruntime", "numpy"),
    )
    return info.model_uri


def _future_example(future: np.ndarray | None, batch: int, dims: tuple) -> np.ndarray:
    if future is None:
        raise ValueError("the model reads known-future inputs: pass future_example")
    f = np.asarray(future, dtype=np.float32)
    if f.ndim != 3 or (len(dims) == 3 and any(d > 0 and d != g for d, g in zip(dims[1:], f.shape[1:]))):
        raise ValueError(f"future_example must be (batch, horizon, F) as the graph declares {dims}, got {f.shape}")
    return np.concatenate([f] * -(-batch // len(f)))[:batch] if len(f) < batch else f[:batch]


@_reaching
def log_torch_model(
    model, input_example: np.ndarray, name: str = "pytorch_model", future_example: np.ndarray | None = None
) -> str:
    """Log the trained PyTorch module of the active run; returns its model URI.

    pickle, not the default pt2: torch.export fixes the batch and sequence dims from the example. A module that
    reads known-future inputs takes two tensors, which MLflow's PyTorch flavour cannot feed from one example:
    it is logged with its signature only (the ONNX model, which serves, carries the example)."""
    _current_run_id()
    import torch

    x = _check_example(input_example)
    model.eval()
    n_future = getattr(getattr(model, "spec", None), "n_future", 0)
    f = None if not n_future else _future_example(future_example, len(x), (-1, -1, n_future))
    with torch.no_grad():
        y = model(torch.from_numpy(x), None if f is None else torch.from_numpy(f)).numpy()
    in_specs: list[ColSpec | TensorSpec] = (
        [_flexible_spec(x)]
        if f is None
        else [_flexible_spec(x, "x"), TensorSpec(np.dtype(np.float32), (-1, *f.shape[1:]), "future")]
    )
    signature = ModelSignature(
        inputs=Schema(in_specs), outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *y.shape[1:]))])
    )
    # pickle is a deliberate choice (see above); MLflow warns about it on every call
    mlogger = logging.getLogger("mlflow.pytorch")
    level = mlogger.level
    mlogger.setLevel(logging.ERROR)
    try:
        info = mlflow.pytorch.log_model(
            model,
            name=name,
            signature=signature,
            input_example=x if f is None else None,
            serialization_format="pickle",
            pip_requirements=_requirements("torch", "numpy") + ["cellcast"],
        )
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
    return VersionInfo(
        name=mv.name,
        version=int(mv.version),
        run_id=mv.run_id or "",
        source=mv.source or "",
        tags=dict(mv.tags or {}),
        aliases=sorted(mv.aliases or []),
    )


def _missing(e: MlflowException) -> bool:
    # the sqlite store reports a missing alias as INVALID_PARAMETER_VALUE "... not found"
    return e.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST) or (
        e.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE) and "not found" in e.message
    )


@_reaching
def register_version(model_name: str, model_uri: str, run_id: str, tags: dict | None = None) -> int:
    """A new version of `model_name` from a logged model URI (the registered model is created on first use)."""
    client = _client()
    try:
        client.get_registered_model(model_name)
    except MlflowException as e:
        if not _missing(e):
            raise
        try:
            client.create_registered_model(
                model_name, description="cellcast forecaster; aliases: champion, challenger, previous"
            )
        except MlflowException:  # a concurrent registration created it first
            client.get_registered_model(model_name)
    source = model_uri
    model_id = None
    if model_uri.startswith("models:/") and "@" not in model_uri and "/" not in model_uri[len("models:/") :]:
        # MLflow 3 logged-model URI: register its artifact location and keep the link to it
        model_id = model_uri[len("models:/") :]
        source = client.get_logged_model(model_id).artifact_location
    mv = client.create_model_version(model_name, source=source, run_id=run_id, tags=_str_tags(tags), model_id=model_id)
    return int(mv.version)


@_reaching
def get_alias(model_name: str, alias: str) -> VersionInfo | None:
    try:
        return _info(_client().get_model_version_by_alias(model_name, alias))
    except MlflowException as e:
        if _missing(e):
            return None
        raise


@_reaching
def get_version(model_name: str, version: int) -> VersionInfo:
    try:
        return _info(_client().get_model_version(model_name, str(int(version))))
    except MlflowException as e:
        if _missing(e):
            raise NotFoundError(f"model '{model_name}' has no version {version}") from None
        raise


@_reaching
def list_versions(model_name: str) -> list[VersionInfo]:
    """Every version of `model_name`, newest first; [] when the model does not exist."""
    client = _client()
    found = client.search_model_versions(f"name = '{model_name}'")
    # search results may omit aliases on some stores: read each version fully
    return sorted((get_version(model_name, int(mv.version)) for mv in found), key=lambda v: -v.version)


# ---- moving aliases: one process at a time per model
#
# MLflow moves one alias per request and has no compare-and-set, so two promotions at once (two machines training
# the same dataset, a rollback during a promotion) could interleave: both read champion v1, both write `previous`,
# one champion replaced without `previous` saying so. Every alias move of a model therefore happens inside a lock
# held in the registry itself: a registered model NAME.aliases-lock, created to take it (the store's unique name
# is the atomic test, on sqlite, PostgreSQL or through a server, across processes and hosts) and deleted to give it
# back. It carries its owner; one left by a process that died (same host) or older than ALIAS_LOCK_STALE_S is broken.

ALIAS_LOCK_SUFFIX = ".aliases-lock"
ALIAS_LOCK_STALE_S = 300
ALIAS_LOCK_WAIT_S = 120
ANY = object()  # apply_decision's expected_champion when the caller does not say


def _lock_owner(client: MlflowClient, lock: str) -> dict | None:
    try:
        return dict(client.get_registered_model(lock).tags or {})
    except MlflowException as e:
        if _missing(e):
            return None
        raise


def _lock_stale(tags: dict) -> bool:
    try:
        age = time.time() - float(tags.get("cellcast.acquired", "nan"))
    except ValueError:
        age = float("nan")
    gone = owner_gone({k[len("cellcast.") :]: v for k, v in tags.items() if k in OWNER_TAGS})
    return gone or not age < ALIAS_LOCK_STALE_S  # nan (no time recorded): stale


@contextmanager
def aliases_locked(model_name: str, wait_s: float = ALIAS_LOCK_WAIT_S) -> Iterator[None]:
    """Hold the lock on `model_name`'s aliases for the block (see above); wait for another holder up to wait_s."""
    client = _client()
    lock = f"{model_name}{ALIAS_LOCK_SUFFIX}"
    deadline = time.monotonic() + wait_s
    pause = 0.02
    while True:
        mine = {**_owner(), "cellcast.acquired": f"{time.time():.3f}"}
        try:
            client.create_registered_model(
                lock, tags=mine, description=f"held while the aliases of {model_name} move (cellcast); deleted after"
            )
            break
        except MlflowException as e:
            if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        held = _lock_owner(client, lock)
        if held is None:
            continue  # given back meanwhile
        if _lock_stale(held):
            if _lock_owner(client, lock) == held:  # still that one: not a lock someone just took
                log.warning(
                    "breaking the lock on the aliases of %s left by process %s on %s",
                    model_name,
                    held.get("cellcast.pid"),
                    held.get("cellcast.host"),
                )
                try:
                    client.delete_registered_model(lock)
                except MlflowException as e:
                    if not _missing(e):
                        raise
            continue
        if time.monotonic() > deadline:
            raise RegistryBusyError(
                f"the aliases of '{model_name}' have been locked for {wait_s:.0f} s by process "
                f"{held.get('cellcast.pid')} on {held.get('cellcast.host')} (registered model "
                f"'{lock}'); try again once it is done, or delete that lock if its process is gone"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.5)
    try:
        yield
    finally:
        try:
            client.delete_registered_model(lock)
        except MlflowException as e:
            if not _missing(e):
                raise


@_reaching
def apply_decision(model_name: str, version: int, decision: Decision, expected_champion: Any = ANY) -> VersionInfo:
    """Record a promotion decision on `version` and move aliases accordingly (nothing else changes).

    expected_champion: the champion version the decision was made against (None: there was none). If another
    promotion or a rollback moved the champion since, the decision is stale: `version` is recorded as not promoted,
    saying why, and the champion stays (it was never compared with this version). A promoted version records the
    champion it replaced (tag promotion.replaced), which is what `previous` then names."""
    client = _client()
    get_version(model_name, version)  # NotFoundError before anything moves
    with aliases_locked(model_name):
        current = get_alias(model_name, CHAMPION)
        now = current.version if current is not None else None
        promote, reason = decision.promote, decision.reason
        if promote and expected_champion is not ANY and now != expected_champion and now != version:
            against = f"champion v{expected_champion}" if expected_champion is not None else "no champion"
            promote = False
            reason = (
                f"not promoted: it was decided against {against}, but the champion is now v{now} (moved "
                f"meanwhile); train again to compare with it. The decision was: {decision.reason}"
            )
        tags = {"promotion.decision": "promoted" if promote else "rejected", "promotion.reason": reason}
        tags.update({f"promotion.{k}": "" if v is None else v for k, v in (decision.metrics or {}).items()})
        if promote:
            tags["promotion.replaced"] = "" if now in (None, version) else now
        for k, v in tags.items():
            client.set_model_version_tag(model_name, str(version), k, str(v))
        client.set_registered_model_alias(model_name, CHALLENGER, str(version))
        if promote:
            if now is not None and now != version:
                client.set_registered_model_alias(model_name, PREVIOUS, str(now))
            client.set_registered_model_alias(model_name, CHAMPION, str(version))
    return get_version(model_name, version)


@_reaching
def set_version_tags(model_name: str, version: int, tags: dict) -> None:
    client = _client()
    for k, v in tags.items():
        client.set_model_version_tag(model_name, str(version), k, str(v))


@_reaching
def data_versions(suffix: str) -> dict[str, list[str]]:
    """The data every registered model version (of models named *suffix) was trained on: {data_md5: ['NAME vN']}."""
    client = _client()
    found: dict[str, list[str]] = {}
    for model in client.search_registered_models(max_results=1000):
        if not model.name.endswith(suffix):
            continue
        for mv in client.search_model_versions(f"name = '{model.name}'"):
            md5 = (mv.tags or {}).get("data_md5")
            if md5 and md5 != "unknown":
                found.setdefault(md5, []).append(f"{mv.name} v{mv.version}")
    return found


@_reaching
def rollback(model_name: str) -> VersionInfo:
    """`previous` becomes champion; the replaced champion becomes `previous` (a second rollback undoes it)."""
    client = _client()
    with aliases_locked(model_name):
        champion = get_alias(model_name, CHAMPION)
        previous = get_alias(model_name, PREVIOUS)
        if previous is None:
            if champion is None:
                if not list_versions(model_name):
                    raise NotFoundError(f"model '{model_name}' is not registered: nothing to roll back")
                raise NoChampionError(f"model '{model_name}' has no champion: nothing to roll back")
            raise NotFoundError(
                f"model '{model_name}' has no 'previous' version to roll back to (champion is v{champion.version})"
            )
        client.set_registered_model_alias(model_name, CHAMPION, str(previous.version))
        if champion is not None and champion.version != previous.version:
            client.set_registered_model_alias(model_name, PREVIOUS, str(champion.version))
    return get_version(model_name, previous.version)


@_reaching
def download_model(model_name: str, alias_or_version: str | int, dst: Path | None = None) -> tuple[Path, VersionInfo]:
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
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=_state["uri"])
        else:
            # download beside it and rename: a reader (the service polling the champion) never
            # sees a half-written copy
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
            try:
                mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp), tracking_uri=_state["uri"])
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


# ---------------------------------------------------------------- monitoring

MONITOR_KIND = "monitor"


@_reaching
def monitoring_run(dataset: str) -> str:
    """The one long-lived monitoring run of `dataset` (run name `monitor-NAME`, tag cellcast.kind=monitor),
    created on first use; its metrics are the monitor's figures over time."""
    client = _client()
    exp_id = _experiment_id(dataset)
    found = client.search_runs(
        [exp_id], f"tags.`cellcast.kind` = '{MONITOR_KIND}'", max_results=1, order_by=["attributes.start_time ASC"]
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        exp_id, run_name=f"monitor-{dataset}", tags={"cellcast.kind": MONITOR_KIND, "dataset": dataset}
    )
    # FINISHED between updates: a run left RUNNING reads as one a killed process left open
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


@_reaching
def log_monitoring(run_id: str, metrics: dict, step: int, timestamp_ms: int, tags: dict | None = None) -> None:
    """One evaluation's figures on the monitoring run, at `step` and `timestamp_ms`; NaN figures are left out."""
    from mlflow.entities import Metric, RunTag

    ms = [
        Metric(str(k), float(v), int(timestamp_ms), int(step))
        for k, v in metrics.items()
        if v is not None and np.isfinite(float(v))
    ]
    ts = [RunTag(str(k), str(v)) for k, v in (tags or {}).items()]
    client = _client()
    for i in range(0, max(len(ms), 1), 1000):  # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=ms[i : i + 1000], tags=ts if i == 0 else [])
    client.set_terminated(run_id, status="FINISHED")


@_reaching
def run_tags(run_id: str) -> dict:
    return dict(_client().get_run(run_id).data.tags)


@_reaching
def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of a run's metric, in step order."""
    return sorted((m.step, m.value) for m in _client().get_metric_history(run_id, key))
