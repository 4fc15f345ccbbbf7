"""Reaching MLflow: which store (embedded sqlite under `<root>/.cellcast`, or the server `MLFLOW_TRACKING_URI` names),
the retries (MLflow's own per-request HTTP retries, bounded by params.yaml `registry.retry_seconds` /
`request_timeout_s`, one log line each), and the one error every public function raises when they run out
(TrackingUnavailableError, naming the server). The shared state of this process's connection lives here."""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ...config import RegistryConfig
from ...errors import TrackingUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    pass

log = logging.getLogger(__package__)  # one name for the package: what MLflow said, under one logger


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
    processes doing that at once (two trains started together on a new project) fail in alembic. A new store is
    a copy of an empty one made once per MLflow version (`_empty_store`): running every migration takes seconds."""
    from ...files import exclusive

    db = Path(uri[len("sqlite:///") :])
    with exclusive(db.with_name(f".{db.name}.lock")):
        if not db.exists():
            _copy_empty_store(db)
        MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
    _state["ready"].add(uri)


def cache_dir() -> Path:
    """Where cellcast keeps what it can rebuild: $CELLCAST_CACHE_DIR, else $XDG_CACHE_HOME/cellcast, else
    ~/.cache/cellcast."""
    if os.environ.get("CELLCAST_CACHE_DIR"):
        return Path(os.environ["CELLCAST_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cellcast"


def _empty_store() -> Path | None:
    """An MLflow sqlite store with every table of this MLflow version and nothing in it, made on first use (None
    when the cache folder cannot be written: the caller then lets MLflow create the store in place)."""
    import tempfile

    path = cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            made = Path(tmp) / "empty.db"
            made_uri = f"sqlite:///{made}"
            MlflowClient(tracking_uri=made_uri, registry_uri=made_uri).search_experiments(max_results=1)
            os.replace(made, path)  # atomic: another process making it at once replaces one whole file with another
    except OSError as e:
        log.debug("no empty MLflow store in %s (%s): the store is created in place", path.parent, e)
        return None
    return path


def _copy_empty_store(db: Path) -> None:
    """Start `db` as a copy of the empty store; MLflow's Default experiment (made with the store) then names its
    artifact folder where MLflow itself would have: `mlruns/0` under the working directory."""
    import shutil
    import sqlite3

    empty = _empty_store()
    if empty is None:
        return
    tmp = db.with_name(f".{db.name}.{os.getpid()}.new")
    shutil.copyfile(empty, tmp)
    with sqlite3.connect(tmp) as con:
        con.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (str(Path.cwd() / "mlruns" / "0"),)
        )
    con.close()
    os.replace(tmp, db)


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
