"""cellcast.pipeline.registry.tracking against a real embedded MLflow store (sqlite + local artifacts) and, once, a real
`mlflow server` reached through MLFLOW_TRACKING_URI. Tiny real models, exported to ONNX here."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime as ort
import pytest
import torch
import typer
from mlflow import MlflowClient
from typer.testing import CliRunner

from cellcast.commands.registry import register as register_commands
from cellcast.pipeline.errors import NoChampionError, NotFoundError
from cellcast.pipeline.modeling.model import Forecaster, ModelSpec
from cellcast.pipeline.registry import promotion, tracking

pytestmark = pytest.mark.integration  # MLflow stores (embedded sqlite and a server): seconds each to create

try:  # tests/ is a plain folder of modules or, if someone adds __init__.py, a package
    from mlflow_server import mlflow_server
except ImportError:  # pragma: no cover
    from tests.mlflow_server import mlflow_server

LOOKBACK, N_VARS, HORIZON = 24, 2, 4


def _model(seed: int, cell: str = "lstm") -> Forecaster:
    torch.manual_seed(seed)
    spec = ModelSpec(
        cell=cell,
        n_vars=N_VARS,
        target_idx=[0],
        lookback=LOOKBACK,
        horizon=HORIZON,
        hidden_size=8,
        rnn_steps=12,
        mean=[10.0, 5.0],
        std=[2.0, 1.0],
    )
    m = Forecaster(spec).eval()
    with torch.no_grad():  # a fresh head is tiny; make models clearly distinguishable
        m.head.bias.add_(float(seed))
    return m


def _export(model: Forecaster, path: Path) -> Path:
    x = torch.randn(2, LOOKBACK, N_VARS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["forecast"],
            dynamic_axes={"x": {0: "batch", 1: "time"}, "forecast": {0: "batch"}},
        )
    return path


def _x(batch: int = 3, steps: int = LOOKBACK, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(batch, steps, N_VARS)) + [10, 5]).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    out = {}
    for seed in (1, 2, 3, 4):
        m = _model(seed)
        out[seed] = (m, _export(m, d / f"m{seed}.onnx"))
    return out


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    return tmp_path_factory.mktemp("project")


@pytest.fixture
def store(store_root, monkeypatch):
    """The embedded store of one project dir, shared by the module (the sqlite schema takes seconds)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(store_root)
    tracking.configure(store_root)
    return store_root


def _new_version(model_name: str, onnx_path: Path, dataset: str = "toy", tags: dict | None = None) -> int:
    with tracking.parent_run(dataset):
        with tracking.candidate_run("lstm") as rid:
            uri = tracking.log_onnx_model(onnx_path, _x())
    return tracking.register_version(model_name, uri, rid, tags=tags)


def decide(
    candidate: float,
    baseline: float,
    baseline_name: str,
    margin: float,
    champion: float | None = None,
    champion_version: int | None = None,
) -> promotion.Decision:
    """The policy on 20 windows whose losses vary by 1% around the given means: a consistent difference."""
    wiggle = 1 + 0.01 * np.resize([1.0, -1.0], 20)
    champ = (
        None
        if champion is None
        else promotion.Comparison(f"champion v{champion_version}", candidate * wiggle, champion * wiggle)
    )
    return promotion.decide(
        "lstm",
        promotion.Comparison(baseline_name, candidate * wiggle, baseline * wiggle, margin),
        champ,
        champion_version=champion_version,
    )


def _aliases(model_name: str) -> dict[str, int]:
    return {a: v.version for v in tracking.list_versions(model_name) for a in v.aliases}


# ---------------------------------------------------------------- configuration and runs


def test_configure_embedded_store_and_env_override(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = tracking.configure(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/.cellcast/mlflow.db"
    assert tracking.configure(tmp_path) == uri and mlflow.get_tracking_uri() == uri  # idempotent
    assert mlflow.get_registry_uri() == uri
    with tracking.parent_run("cfg") as rid:
        tracking.log_dict({"a": 1}, "a.json")
    exp = MlflowClient().get_experiment_by_name("cellcast/cfg")
    assert exp.artifact_location.startswith((tmp_path / ".cellcast" / "mlartifacts").resolve().as_uri())
    art = MlflowClient().get_run(rid).info.artifact_uri
    assert Path(art.replace("file://", ""), "a.json").is_file()
    assert not (tmp_path / "mlruns").exists()

    other = f"sqlite:///{tmp_path / 'elsewhere' / 'other.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    assert tracking.configure(tmp_path) == other
    assert mlflow.get_tracking_uri() == other
    with tracking.parent_run("cfg"):
        pass
    assert (
        MlflowClient().get_experiment_by_name("cellcast/cfg").artifact_location
        == (tmp_path / "elsewhere" / "mlartifacts" / "cfg").as_uri()
    )
    assert not (tmp_path / "mlruns").exists()


def test_a_new_store_is_a_copy_of_the_empty_one_made_once_per_mlflow_version(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CELLCAST_CACHE_DIR", str(tmp_path / "cache"))
    empty = tmp_path / "cache" / f"mlflow-{mlflow.__version__}-empty.db"
    stores = []
    for name in ("first", "second"):
        work = tmp_path / name
        work.mkdir()
        monkeypatch.chdir(work)
        uri = tracking.configure(work)
        stores.append(Path(uri.removeprefix("sqlite:///")))
        assert empty.is_file()
        # MLflow's own Default experiment names the folder MLflow would have given it: under this project
        assert MlflowClient().get_experiment("0").artifact_location == str(work.resolve() / "mlruns" / "0")
        with tracking.parent_run("cfg"):
            tracking.log_metrics({"m": 1.0})
    made = empty.stat().st_mtime_ns
    assert all(s.is_file() and s.stat().st_size > 0 for s in stores) and stores[0] != stores[1]
    # the second store is not the first's: each holds its own run only
    assert len(MlflowClient().search_runs([MlflowClient().get_experiment_by_name("cellcast/cfg").experiment_id])) == 1
    assert empty.stat().st_mtime_ns == made  # made once
    # a cache folder that cannot be written: MLflow creates the store in place
    monkeypatch.setenv("CELLCAST_CACHE_DIR", "/proc/cellcast-cache")
    work = tmp_path / "third"
    work.mkdir()
    monkeypatch.chdir(work)
    assert tracking.configure(work).endswith("third/.cellcast/mlflow.db")
    assert MlflowClient().search_experiments(max_results=5)


def test_a_store_named_in_the_environment_stays_in_use_and_the_hint_names_it(tmp_path, monkeypatch):
    # a store file under another project's .cellcast: a second configure() (the summary's) once fell back
    # to this project's embedded store and printed a UI command for a different database
    from cellcast.commands.training import ui_hint

    monkeypatch.chdir(tmp_path)
    other = f"sqlite:///{tmp_path / 'shared' / '.cellcast' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    assert tracking.configure(tmp_path) == other
    assert tracking.configure() == other and tracking.tracking_uri() == other
    assert f"--backend-store-uri {other} " in ui_hint()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.configure() == "http://tracking.example:5000"
    assert ui_hint().startswith("MLflow UI: http://tracking.example:5000 ")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    mine = tracking.configure(tmp_path)
    assert mine == f"sqlite:///{tmp_path.resolve()}/.cellcast/mlflow.db"
    # the variable set back to a store this process chose itself (what a restored environment does) is not
    # the user naming it: the project of the working directory keeps its own store
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mine)
    assert tracking.configure() == f"sqlite:///{(tmp_path / 'b').resolve()}/.cellcast/mlflow.db"


def test_subprocess_inherits_the_embedded_store(store):
    # mlflow exports MLFLOW_TRACKING_URI; a child process (a DVC stage, a CLI call) must land in the
    # same project store with artifacts under .cellcast, not in its own ./mlruns
    code = (
        "from cellcast.pipeline.registry import tracking; print(tracking.configure('/nonexistent-root'));"
        "\nwith tracking.parent_run('child') as r: tracking.log_dict({'a': 1}, 'a.json')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking.configure(store)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == f"sqlite:///{store.resolve()}/.cellcast/mlflow.db"
    exp = MlflowClient().get_experiment_by_name("cellcast/child")
    assert exp.artifact_location == (store.resolve() / ".cellcast" / "mlartifacts" / "child").as_uri()


def test_nested_runs_with_params_metrics_tags_and_artifacts(store):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with tracking.parent_run("nest", run_name="pipeline", tags={"data_md5": "abc"}) as pid:
        tracking.log_params({"lookback": LOOKBACK})
        with tracking.candidate_run("lstm-h8", params={"cell": "lstm", "hidden_size": 8}, tags={"kind": "rnn"}) as cid:
            for step, loss in enumerate([1.0, 0.5, 0.25]):
                tracking.log_metrics({"train_loss": loss}, step=step)
            tracking.log_metrics({"mase": 0.8})
            tracking.set_tags({"onnx.parity": "ok"})
            fig, ax = plt.subplots()
            ax.plot([1, 2, 3])
            tracking.log_figure(fig, "plots/forecast.png")
            plt.close(fig)
            tracking.log_dict({"cell": "lstm"}, "spec.json")
        tracking.set_tags({"best": cid})
    c = MlflowClient()
    parent, child = c.get_run(pid), c.get_run(cid)
    assert child.data.tags["mlflow.parentRunId"] == pid
    assert child.info.experiment_id == parent.info.experiment_id
    assert c.get_experiment(parent.info.experiment_id).name == "cellcast/nest"
    assert parent.data.params == {"lookback": str(LOOKBACK)} and parent.data.tags["data_md5"] == "abc"
    assert parent.data.tags["best"] == cid and parent.info.run_name == "pipeline"
    assert child.data.params == {"cell": "lstm", "hidden_size": "8"}
    assert child.data.tags["kind"] == "rnn" and child.data.tags["onnx.parity"] == "ok"
    assert child.data.metrics["mase"] == 0.8
    assert [m.value for m in c.get_metric_history(cid, "train_loss")] == [1.0, 0.5, 0.25]
    assert {f.path for f in c.list_artifacts(cid)} >= {"plots", "spec.json"}
    assert [f.path for f in c.list_artifacts(cid, "plots")] == ["plots/forecast.png"]
    assert parent.info.status == child.info.status == "FINISHED"


def test_failure_ends_runs_failed_and_logging_outside_a_run_is_refused(store):
    ids = {}
    with pytest.raises(ZeroDivisionError):
        with tracking.parent_run("nest") as pid:
            ids["p"] = pid
            with tracking.candidate_run("gru") as cid:
                ids["c"] = cid
                raise ZeroDivisionError("inside a candidate run")
    c = MlflowClient()
    assert c.get_run(ids["p"]).info.status == "FAILED" and c.get_run(ids["c"]).info.status == "FAILED"
    assert mlflow.active_run() is None
    with pytest.raises(RuntimeError, match="no active run"):
        tracking.log_metrics({"x": 1.0})
    with pytest.raises(RuntimeError, match="parent_run"):
        with tracking.candidate_run("orphan"):
            pass


def test_candidate_in_a_worker_thread_nests_under_the_parent(store):
    # Prefect's default task runner runs tasks in threads, where MLflow's active run is not visible
    out = {}
    with tracking.parent_run("nest") as pid:

        def task():
            with tracking.candidate_run("rnn") as cid:
                tracking.log_metrics({"mase": 0.9})
                out["cid"] = cid

        t = threading.Thread(target=task)
        t.start()
        t.join()
    run = MlflowClient().get_run(out["cid"])
    assert run.data.tags["mlflow.parentRunId"] == pid and run.data.metrics["mase"] == 0.9


# ---------------------------------------------------------------- logged models


def test_onnx_model_signature_has_flexible_batch_and_sequence(store, models):
    m, path = models[1]
    with tracking.parent_run("sig"):
        with tracking.candidate_run("lstm"):
            uri = tracking.log_onnx_model(path, _x(batch=1), metadata={"cell": "lstm"})
    info = mlflow.models.get_model_info(uri)
    (spec,) = info.signature.inputs.inputs
    assert spec.shape == (-1, -1, N_VARS) and spec.name == "x" and spec.type == np.float32
    (out,) = info.signature.outputs.inputs
    assert out.shape == (-1, HORIZON, 1)
    assert info.metadata == {"cell": "lstm"}
    pyf = mlflow.pyfunc.load_model(uri)
    for batch, steps in [(1, LOOKBACK), (5, LOOKBACK), (5, LOOKBACK + 7)]:
        x = _x(batch, steps)
        got = pyf.predict({"x": x})["forecast"]
        want = m(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_torch_model_loads_and_predicts_any_batch_and_length(store, models):
    m, _ = models[2]
    with tracking.parent_run("sig"):
        with tracking.candidate_run("lstm"):
            uri = tracking.log_torch_model(m, _x(batch=2))
    info = mlflow.models.get_model_info(uri)
    assert info.signature.inputs.inputs[0].shape == (-1, -1, N_VARS)
    pyf = mlflow.pyfunc.load_model(uri)
    for batch, steps in [(1, LOOKBACK), (5, LOOKBACK), (5, LOOKBACK + 7)]:
        x = _x(batch, steps)
        got = np.asarray(pyf.predict(x))
        want = m(torch.from_numpy(x)).detach().numpy()
        assert got.shape == (batch, HORIZON, 1)
        np.testing.assert_allclose(got, want, atol=1e-5)


# ---------------------------------------------------------------- registry, promotion, rollback


def test_register_promote_reject_and_rollback(store, models):
    name = "promo-forecaster"
    assert tracking.get_alias(name, "champion") is None  # no such model yet
    v1 = _new_version(name, models[1][1], tags={"cell": "lstm"})
    info = tracking.get_version(name, v1)
    assert info.version == 1 and info.tags["cell"] == "lstm" and info.run_id

    # v1 beats the baseline by more than the margin, no champion yet: promoted
    tracking.apply_decision(name, v1, decide(0.80, 1.00, "seasonal_naive_48", 0.02))
    assert _aliases(name) == {"champion": 1, "challenger": 1}
    assert tracking.get_version(name, v1).tags["promotion.decision"] == "promoted"

    # v2 is within the margin of the baseline: challenger only, champion unchanged
    v2 = _new_version(name, models[2][1])
    d2 = decide(0.99, 1.00, "seasonal_naive_48", 0.02, champion=0.80, champion_version=1)
    got = tracking.apply_decision(name, v2, d2)
    assert got.aliases == ["challenger"]
    assert _aliases(name) == {"champion": 1, "challenger": 2}
    assert got.tags["promotion.decision"] == "rejected" and got.tags["promotion.reason"] == d2.reason
    assert got.tags["promotion.candidate_mase"] == "0.99" and got.tags["promotion.baseline_name"] == "seasonal_naive_48"

    # v3 beats the baseline but not the champion: champion unchanged
    v3 = _new_version(name, models[3][1])
    tracking.apply_decision(name, v3, decide(0.85, 1.00, "naive", 0.02, champion=0.80, champion_version=1))
    assert _aliases(name) == {"champion": 1, "challenger": 3}
    assert "champion unchanged" in tracking.get_version(name, v3).tags["promotion.reason"]

    # v4 beats both: champion moves, the old one becomes previous
    v4 = _new_version(name, models[4][1])
    tracking.apply_decision(name, v4, decide(0.70, 1.00, "naive", 0.02, champion=0.80, champion_version=1))
    assert _aliases(name) == {"champion": 4, "challenger": 4, "previous": 1}
    assert [v.version for v in tracking.list_versions(name)] == [4, 3, 2, 1]

    # rollback: previous is champion again; twice is an undo
    assert tracking.rollback(name).version == 1
    assert _aliases(name) == {"champion": 1, "challenger": 4, "previous": 4}
    assert tracking.rollback(name).version == 4
    assert _aliases(name) == {"champion": 4, "challenger": 4, "previous": 1}

    # the champion's ONNX file serves the champion's numbers
    path, info = tracking.download_model(name, "champion", dst=store / "dl")
    assert path.suffix == ".onnx" and info.version == 4
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _x(batch=5, steps=LOOKBACK + 3)
    want = models[4][0](torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], want, atol=1e-4)
    # by number, into the default cache under the project, reused on the second call
    p2, i2 = tracking.download_model(name, 2)
    assert i2.version == 2 and p2.is_relative_to(store / ".cellcast" / "models")
    assert tracking.download_model(name, "2")[0] == p2


def test_a_stale_decision_is_not_applied_and_a_dead_holders_lock_is_broken(store, models):
    from cellcast.pipeline.errors import RegistryBusyError

    name = "stale-forecaster"
    v1, v2, v3 = (_new_version(name, models[i][1]) for i in (1, 2, 3))
    tracking.apply_decision(name, v1, decide(0.5, 1.0, "naive", 0.02), expected_champion=None)
    # v3 is decided against v1; v2 is promoted over v1 meanwhile
    d3 = decide(0.3, 1.0, "naive", 0.02, champion=0.5, champion_version=v1)
    tracking.apply_decision(
        name, v2, decide(0.4, 1.0, "naive", 0.02, champion=0.5, champion_version=v1), expected_champion=v1
    )
    got = tracking.apply_decision(name, v3, d3, expected_champion=v1)
    assert _aliases(name) == {"champion": v2, "previous": v1, "challenger": v3}
    assert got.tags["promotion.decision"] == "rejected"
    assert got.tags["promotion.reason"].startswith(
        "not promoted: it was decided against champion v1, but the champion is now v2 (moved meanwhile); train again"
    )
    assert tracking.get_version(name, v2).tags["promotion.replaced"] == str(v1)

    client = MlflowClient()
    lock = f"{name}{tracking.ALIAS_LOCK_SUFFIX}"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    import socket
    import time

    # a live holder (this process, as another would be): the wait ends in one line naming it
    client.create_registered_model(lock, tags={**tracking._owner(), "cellcast.acquired": f"{time.time():.3f}"})
    with pytest.raises(
        RegistryBusyError,
        match=rf"aliases of '{name}' have been locked for 1 s by process "
        rf"{os.getpid()} on {socket.gethostname()}",
    ):
        with tracking.aliases_locked(name, wait_s=1):
            pass
    client.delete_registered_model(lock)
    # a holder that died (kill -9 in the middle of a promotion): its lock is broken, the rollback goes through
    client.create_registered_model(
        lock,
        tags={
            "cellcast.host": socket.gethostname(),
            "cellcast.pid": gone,
            "cellcast.process_started": "1.00",
            "cellcast.acquired": f"{time.time():.3f}",
        },
    )
    assert tracking.rollback(name).version == v1
    assert _aliases(name) == {"champion": v1, "previous": v2, "challenger": v3}
    assert not client.search_registered_models(f"name = '{lock}'")


def test_rollback_and_download_with_nothing_there_give_clear_errors(store, models):
    with pytest.raises(NotFoundError, match="'ghost-forecaster' is not registered"):
        tracking.rollback("ghost-forecaster")
    with pytest.raises(NoChampionError, match=r"no champion for model 'ghost-forecaster': train one"):
        tracking.download_model("ghost-forecaster", "champion")

    name = "lonely-forecaster"
    v1 = _new_version(name, models[1][1])
    with pytest.raises(NoChampionError, match="has no champion: nothing to roll back"):
        tracking.rollback(name)
    tracking.apply_decision(name, v1, decide(0.5, 1.0, "naive", 0.02))
    with pytest.raises(NotFoundError, match=r"no 'previous' version to roll back to \(champion is v1\)"):
        tracking.rollback(name)
    with pytest.raises(NotFoundError, match="has no version 9"):
        tracking.download_model(name, 9)
    with pytest.raises(NotFoundError, match="no alias 'staging'"):
        tracking.download_model(name, "staging")
    assert _aliases(name) == {"champion": 1, "challenger": 1}  # errors moved nothing


def test_retry_budget_from_params_bounds_mlflows_own_retries():
    from cellcast.pipeline.config import RegistryConfig

    for seconds in (0, 1, 2, 5, 30, 60, 300, 3600):
        p = tracking.RetryPolicy.within(seconds, 30)
        assert p.wait_s <= seconds and p.retries <= tracking.MAX_RETRIES
        assert (p.retries == 0) == (seconds == 0)
    assert tracking.RetryPolicy.within(60, 30).waits == [0, 4, 8, 16, 32]  # urllib3's schedule, no jitter
    assert tracking.RetryPolicy.within(3600, 30).waits[-1] == 120  # one wait is capped at 120 s
    tracking.configure(registry=RegistryConfig(retry_seconds=30, request_timeout_s=7))
    assert (
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"],
        os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"],
        os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"],
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"],
    ) == ("5", "1", "0", "7")
    tracking.configure()  # a later call without settings keeps them
    assert tracking.retry_policy() == tracking.RetryPolicy(5, 1, 7)


def test_unreachable_server_is_one_error_after_the_stated_retries(tmp_path, monkeypatch, caplog):
    from mlflow_server import free_port

    from cellcast.pipeline.config import RegistryConfig
    from cellcast.pipeline.errors import TrackingUnavailableError

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    monkeypatch.chdir(tmp_path)
    tracking.configure(registry=RegistryConfig(retry_seconds=2))
    caplog.set_level("WARNING", logger="cellcast")
    for call in (
        lambda: tracking.get_alias("x-forecaster", "champion"),
        lambda: tracking.list_versions("x"),
        lambda: tracking.download_model("x-forecaster", "champion"),
        tracking.check_reachable,
    ):
        caplog.clear()
        with pytest.raises(TrackingUnavailableError) as e:
            call()
        assert "\n" not in str(e.value)
        assert str(e.value).startswith(
            f"tracking server {dead} unreachable (connection refused); gave up after 2 retries over 2 s"
        )
        said = [r.getMessage() for r in caplog.records if r.name == "cellcast.pipeline.registry.tracking"]
        assert said == [
            f"tracking server {dead}: connection refused; retry 1/2 in 0 s (at most 2 s of waiting in "
            "all, registry.retry_seconds)",
            f"tracking server {dead}: connection refused; retry 2/2 in 2 s (at most 2 s of waiting in "
            "all, registry.retry_seconds)",
        ]
    # a run that cannot start leaves nothing open in this process
    with pytest.raises(TrackingUnavailableError):
        with tracking.parent_run("down"):
            pass
    assert mlflow.active_run() is None
    tracking.configure(registry=RegistryConfig())


def test_every_retry_to_the_tracking_server_is_one_line_of_ours(monkeypatch, tmp_path, caplog):
    """urllib3 logs a retry as its own warning; a reset keep-alive connection does not even name the host
    (seen when the server was killed while a run logged its metrics)."""
    import logging

    from urllib3.util import Retry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    monkeypatch.chdir(tmp_path)
    tracking.configure()
    pool_logger = logging.getLogger("urllib3.connectionpool")
    retry = Retry(total=5, backoff_factor=2).increment(method="POST", url="/x", error=ConnectionResetError())
    caplog.set_level("WARNING")
    for err, url, ours in (
        (ConnectionResetError(104, "Connection reset by peer"), "/api/2.0/mlflow/runs/log-batch", True),
        (OSError("HTTPConnection(host='127.0.0.1', port=5999): refused"), "/anything", True),
        (ConnectionResetError(104, "Connection reset by peer"), "/simple/numpy/", False),
    ):
        caplog.clear()
        pool_logger.warning("Retrying (%r) after connection broken by '%r': %s", retry, err, url)
        said = [r.getMessage() for r in caplog.records]
        if ours:
            assert len(said) == 1 and said[0].startswith("tracking server http://127.0.0.1:5999: connection ")
            assert "retry 1/" in said[0]
        else:
            assert len(said) == 1 and said[0].startswith("Retrying (")  # another server's: left as it was
    monkeypatch.delenv("MLFLOW_TRACKING_URI")


def test_runs_left_running_by_a_dead_process_of_this_host_end_killed(store):
    import socket

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    client = MlflowClient()
    with tracking.parent_run("orphans"):
        pass
    exp = client.get_experiment_by_name("cellcast/orphans").experiment_id
    host = socket.gethostname()
    dead = client.create_run(
        exp, tags={"cellcast.host": host, "cellcast.pid": gone, "cellcast.process_started": "1.00"}
    ).info.run_id
    mine = client.create_run(exp, tags=tracking._owner()).info.run_id
    reused = client.create_run(exp, tags={**tracking._owner(), "cellcast.process_started": "1.00"}).info.run_id
    elsewhere = client.create_run(exp, tags={"cellcast.host": "another-host", "cellcast.pid": gone}).info.run_id
    untagged = client.create_run(exp).info.run_id

    assert sorted(tracking.end_orphans("orphans")) == sorted([dead, reused])
    status = {rid: client.get_run(rid).info.status for rid in (dead, mine, reused, elsewhere, untagged)}
    assert status == {dead: "KILLED", mine: "RUNNING", reused: "KILLED", elsewhere: "RUNNING", untagged: "RUNNING"}
    assert (
        f"process {gone} on {host} ended without closing this run"
        in client.get_run(dead).data.tags["cellcast.ended_reason"]
    )
    with tracking.parent_run("orphans") as rid:  # a new run tags its owner, and ends nothing of a live process
        pass
    tags = client.get_run(rid).data.tags
    assert tags["cellcast.pid"] == str(os.getpid()) and tags["cellcast.host"] == host
    assert client.get_run(mine).info.status == "RUNNING"
    for rid in (mine, elsewhere, untagged):
        client.set_terminated(rid)


# ---------------------------------------------------------------- CLI


def test_cli_models_rollback_ui(store, models):
    app = typer.Typer()
    register_commands(app)
    runner = CliRunner()

    r = runner.invoke(app, ["models", "clitoy"])
    assert r.exit_code == 2 and "clitoy-forecaster" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["rollback", "clitoy"])
    assert r.exit_code == 2 and "not registered" in r.output

    name = "clitoy-forecaster"
    v1 = _new_version(name, models[1][1], dataset="clitoy")
    tracking.apply_decision(name, v1, decide(0.5, 1.0, "naive", 0.02))
    v2 = _new_version(name, models[2][1], dataset="clitoy")
    tracking.apply_decision(name, v2, decide(0.4, 1.0, "naive", 0.02, champion=0.5, champion_version=1))

    r = runner.invoke(app, ["models", "clitoy"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "clitoy-forecaster: 2 version(s), champion v2"
    row2 = next(ln for ln in lines if ln.startswith("v2 "))
    assert "challenger,champion" in row2 and "promoted" in row2 and "0.4" in row2
    assert "previous" in next(ln for ln in lines if ln.startswith("v1 "))

    r = runner.invoke(app, ["rollback", "clitoy"])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == "clitoy-forecaster: champion v2 -> v1; previous is now v2"
    assert _aliases(name)["champion"] == 1

    r = runner.invoke(app, ["ui"])
    assert r.exit_code == 0
    # this environment's mlflow (a bare `mlflow` on PATH may be another one, or none)
    assert r.output.strip() == (
        f"{Path(sys.executable).with_name('mlflow')} ui --backend-store-uri "
        f"sqlite:///{store.resolve()}/.cellcast/mlflow.db --port 5000 --host 127.0.0.1"
    )


# ---------------------------------------------------------------- a real tracking server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


def test_remote_server_register_promote_rollback_download(server, models, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.chdir(tmp_path)
    assert tracking.configure() == server
    name = "remote-forecaster"
    v1 = _new_version(name, models[1][1], dataset="remote")
    tracking.apply_decision(name, v1, decide(0.6, 1.0, "naive", 0.02))
    v2 = _new_version(name, models[2][1], dataset="remote")
    tracking.apply_decision(name, v2, decide(0.5, 1.0, "naive", 0.02, champion=0.6, champion_version=v1))
    assert _aliases(name) == {"champion": v2, "challenger": v2, "previous": v1}
    assert tracking.get_version(name, v2).source.startswith("mlflow-artifacts:")

    assert tracking.rollback(name).version == v1
    path, info = tracking.download_model(name, "champion")
    assert info.version == v1 and path.is_relative_to(tmp_path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _x(batch=1)
    np.testing.assert_allclose(
        sess.run(None, {"x": x})[0], models[1][0](torch.from_numpy(x)).detach().numpy(), atol=1e-4
    )
    assert not (tmp_path / ".cellcast" / "mlflow.db").exists()  # nothing went to the embedded store
