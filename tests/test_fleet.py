"""One service for several models, the challenger in shadow and canary, and the live forecast log: the app in
process (Starlette's TestClient, lifespan and alias polling included) on local ONNX files, no registry."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from fastapi.testclient import TestClient
from test_serve import metrics  # Prometheus text -> samples, as the service tests read it

from cellcast.pipeline.config import Settings
from cellcast.pipeline.engine.inference import OnnxForecaster
from cellcast.pipeline.engine.onnx_export import export_onnx
from cellcast.pipeline.errors import ConfigError, NotFoundError
from cellcast.pipeline.modeling.model import ModelSpec, build
from cellcast.pipeline.serving.canary import canary_share
from cellcast.pipeline.serving.livelog import Answer, LiveLog
from cellcast.pipeline.serving.service import create_app

SHAPES = {  # dataset: (variables, lookback, horizon, freq)
    "alpha": (["load", "temp"], 24, 4, "h"),
    "beta": (["flow"], 16, 3, "D"),
}


def export(d: Path, dataset: str, seed: int, quantiles: bool = False, lookback: int | None = None) -> Path:
    variables, usual, horizon, freq = SHAPES[dataset]
    lookback = lookback or usual
    spec = ModelSpec(
        cell="gru",
        n_vars=len(variables),
        target_idx=[0],
        lookback=lookback,
        horizon=horizon,
        hidden_size=8,
        rnn_steps=8,
        mean=[10.0] * len(variables),
        std=[2.0] * len(variables),
        **({"quantiles": [0.1, 0.5, 0.9]} if quantiles else {}),
    )
    torch.manual_seed(seed)
    meta = {"variables": variables, "targets": variables[:1], "freq": freq, "dataset": dataset}
    return export_onnx(build(spec), d / f"{dataset}-{seed}-{lookback}.onnx", meta)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fleet-models")
    return {
        ("alpha", "1"): export(d, "alpha", 1),
        ("alpha", "2"): export(d, "alpha", 2, quantiles=True),
        ("beta", "1"): export(d, "beta", 3),
    }


class Source:
    """A model source the test moves like a registry alias (None: the alias is absent); counts its calls."""

    def __init__(self, dataset: str, path: Path | None, version: str | None):
        self.dataset, self.calls = dataset, 0
        self.set(path, version)

    def set(self, path, version):
        self.value = (
            None if path is None else (path, SimpleNamespace(name=f"{self.dataset}-forecaster", version=version))
        )

    def __call__(self):
        self.calls += 1
        if self.value is None:
            raise NotFoundError(f"model '{self.dataset}-forecaster' has no alias 'challenger'")
        return self.value


def settings(tmp_path: Path, dataset: str, **serve) -> Settings:
    return Settings(dataset=dataset, paths={"forecasts": tmp_path / "forecasts"}, serve=serve)


def body(dataset: str, shift: float = 0.0, timestamps: bool = True, lookback: int | None = None) -> dict:
    variables, usual, _, freq = SHAPES[dataset]
    lookback = lookback or usual
    t = np.arange(lookback)
    out: dict = {"values": {v: (10 + shift + np.sin(t / 3 + i)).tolist() for i, v in enumerate(variables)}}
    if timestamps:
        out["timestamps"] = [str(s) for s in pd.date_range("2024-03-01", periods=lookback, freq=freq)]
    return out


def window(dataset: str, shift: float = 0.0) -> np.ndarray:
    variables = SHAPES[dataset][0]
    b = body(dataset, shift)
    return np.stack([b["values"][v] for v in variables], axis=1).astype(np.float32)[None]


def live_rows(tmp_path: Path, dataset: str) -> pd.DataFrame:
    files = sorted((tmp_path / "forecasts" / dataset / "live").glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def two_models(tmp_path: Path, files, **options):
    """A service of alpha and beta, each at v1, behind the token `t0k`."""
    return create_app(
        [settings(tmp_path, "alpha"), settings(tmp_path, "beta")],
        sources={
            "alpha": {"champion": Source("alpha", files["alpha", "1"], "1")},
            "beta": {"champion": Source("beta", files["beta", "1"], "1")},
        },
        device="cpu",
        poll_seconds=60,
        token="t0k",
        **options,
    )


def test_several_models_each_on_its_own_route(tmp_path, files):
    app = two_models(tmp_path, files)
    auth = {"Authorization": "Bearer t0k"}
    with TestClient(app) as c:
        listed = {m["name"]: m for m in c.get("/v1/models", headers=auth).json()["models"]}
        assert set(listed) == {"alpha", "beta"}
        assert listed["alpha"]["loaded"] and listed["alpha"]["version"] == "1"
        assert listed["beta"]["model"] == "beta-forecaster" and listed["beta"]["provider"] == "CPUExecutionProvider"
        assert listed["alpha"]["loaded_at"] and listed["alpha"]["challenger"] is None

        for name in ("alpha", "beta"):
            expected = OnnxForecaster.from_path(files[name, "1"], device="cpu").predict(window(name))[0, :, 0]
            variables = SHAPES[name][0]
            for route in (name, f"{name}-forecaster"):  # the dataset's name or the registered model's
                r = c.post(f"/v1/models/{route}/forecast", json=body(name), headers=auth)
                assert r.status_code == 200, r.text
                np.testing.assert_allclose(r.json()["forecast"][variables[0]], expected, rtol=0, atol=1e-6)
                assert r.json()["model"] == {"name": f"{name}-forecaster", "version": "1", "alias": "champion"}
                assert len(r.headers["x-request-id"]) == 32
        info = c.get("/v1/models/beta", headers=auth).json()
        assert (info["lookback"], info["horizon"], info["variables"]) == (16, 3, ["flow"])
        assert info["memory"]["onnx_file_bytes"] == files["beta", "1"].stat().st_size

        # a body for the other model is refused by this one's rules
        assert c.post("/v1/models/beta/forecast", json=body("alpha"), headers=auth).status_code == 422
        # an unknown name: one line naming what is served
        r = c.post("/v1/models/gamma/forecast", json=body("alpha"), headers=auth)
        assert r.status_code == 404 and r.json()["detail"] == (
            "model 'gamma': not served here (serving alpha, beta; GET /v1/models)"
        )
        assert c.get("/v1/models/gamma", headers=auth).status_code == 404
        # the one-model routes name the route to use
        r = c.post("/v1/forecast", json=body("alpha"), headers=auth)
        assert r.status_code == 400 and "POST /v1/models/{name}/forecast" in r.json()["detail"]
        assert "GET /v1/models/{name}" in c.get("/model", headers=auth).json()["detail"]
        # the token guards every model route; health and metrics stay open
        assert c.post("/v1/models/alpha/forecast", json=body("alpha")).status_code == 401
        assert c.get("/v1/models").status_code == 401
        assert c.get("/health").json() == {"status": "ok", "models": {"alpha": "1", "beta": "1"}}
        # the body limit too
        big = {"values": {"load": [1.0] * 300_000, "temp": [1.0]}}
        assert c.post("/v1/models/alpha/forecast", json=big, headers=auth).status_code == 413

        m = metrics(c.get("/metrics").text)
        req = m["cellcast_requests_total"]
        assert req[(("method", "POST"), ("path", "/v1/models/{name}/forecast"), ("status", "200"))] == 4
        assert req[(("method", "POST"), ("path", "/v1/models/{name}/forecast"), ("status", "404"))] == 1
        info_g = {dict(k)["name"]: v for k, v in m["cellcast_model_info"].items()}
        assert info_g == {"alpha-forecaster": 1, "beta-forecaster": 1}
        mem = {(dict(k)["name"], dict(k)["kind"]): v for k, v in m["cellcast_model_memory_bytes"].items()}
        assert mem["alpha-forecaster", "onnx_file"] == files["alpha", "1"].stat().st_size
        assert ("beta-forecaster", "rss_delta") in mem
        answers = {
            (dict(k)["name"], dict(k)["role"], dict(k)["served"]): v for k, v in m["cellcast_forecasts_total"].items()
        }
        assert answers == {("alpha-forecaster", "champion", "true"): 2, ("beta-forecaster", "champion", "true"): 2}

        # the OpenAPI document: the generic route, and each model's own body
        schema = c.get("/openapi.json").json()
        assert "/v1/models/{name}/forecast" in schema["paths"]
        own = schema["components"]["schemas"]["Series.beta"]["properties"]["values"]
        assert own["required"] == ["flow"] and own["properties"]["flow"]["minItems"] == 16
        assert schema["paths"]["/v1/models/beta/forecast"]["post"]["requestBody"]["content"]

    # the live log: every answer served, one row per step, in the dataset's own folder
    rows = live_rows(tmp_path, "beta")
    assert len(rows) == 2 * 3 and set(rows["served"]) == {True} and set(rows["role"]) == {"champion"}


def test_every_answer_of_a_forecast_route_carries_a_request_id_and_a_refusal_logs_it(tmp_path, files, caplog):
    app = two_models(tmp_path, files, max_body_bytes=10_000)
    auth = {"Authorization": "Bearer t0k"}
    big = {"values": {"load": [1.0] * 3000, "temp": [1.0]}}
    asks = {  # what each answer is, and how it is asked for
        200: ("/v1/models/alpha/forecast", {"json": body("alpha"), "headers": auth}),
        400: ("/v1/forecast", {"json": body("alpha"), "headers": auth}),
        401: ("/v1/models/alpha/forecast", {"json": body("alpha")}),
        404: ("/v1/models/gam%0Ama/forecast", {"json": body("alpha"), "headers": auth}),
        413: ("/v1/models/alpha/forecast", {"json": big, "headers": auth}),
        415: ("/v1/models/alpha/forecast", {"content": b"{}", "headers": {**auth, "Content-Type": "text/plain"}}),
        422: ("/v1/models/beta/forecast", {"json": body("alpha"), "headers": auth}),
    }
    ids = {}
    with TestClient(app) as c, caplog.at_level("INFO", logger="cellcast.pipeline.serving.context"):
        for status, (path, kw) in asks.items():
            r = c.post(path, **kw)
            assert r.status_code == status, (path, r.text)
            ids[status] = r.headers["x-request-id"]
        assert "x-request-id" not in c.get("/v1/models/gamma", headers=auth).headers  # not a forecast route
    assert all(len(i) == 32 for i in ids.values()) and len(set(ids.values())) == len(ids)
    # each refusal is one log line naming its id, status and why; the answered one is in the live log instead
    lines = [r.getMessage() for r in caplog.records if "request_id=" in r.getMessage()]
    assert len(lines) == len(ids) - 1 and not any(ids[200] in line for line in lines)
    for status in set(ids) - {200}:
        (line,) = [line for line in lines if ids[status] in line]
        assert f" {status} request_id={ids[status]}: " in line and line.startswith("POST /v1/")
    assert "gam\\nma" in next(line for line in lines if ids[404] in line)  # a line break in the path stays escaped
    assert set(live_rows(tmp_path, "alpha")["request_id"]) == {ids[200]}


def test_a_fleet_is_refused_at_once_when_ambiguous(tmp_path, files):
    one = Source("alpha", files["alpha", "1"], "1")
    with pytest.raises(ConfigError, match=r"serve: a dataset named twice \(alpha, alpha\)"):
        create_app([settings(tmp_path, "alpha")] * 2, sources={"alpha": {"champion": one}}, device="cpu")
    with pytest.raises(ConfigError, match="`source` is one model's"):
        create_app([settings(tmp_path, "alpha"), settings(tmp_path, "beta")], source=one, device="cpu")
    assert one.calls == 0  # refused before anything loads


def test_lazy_models_load_on_their_first_request_once(tmp_path, files, monkeypatch):
    from cellcast.pipeline.serving import swap

    loads = []
    real = swap.OnnxForecaster.from_path

    def counted(path, **kw):
        loads.append(path)
        threading.Event().wait(0.2)  # a slow load: the concurrent first requests all arrive during it
        return real(path, **kw)

    monkeypatch.setattr(swap.OnnxForecaster, "from_path", counted)
    alpha, beta = Source("alpha", files["alpha", "1"], "1"), Source("beta", files["beta", "1"], "1")
    app = create_app(
        [settings(tmp_path, "alpha", load="lazy"), settings(tmp_path, "beta")],  # the first dataset's load rules
        sources={"alpha": {"champion": alpha}, "beta": {"champion": beta}},
        device="cpu",
        poll_seconds=0.05,
    )
    assert alpha.calls == beta.calls == 0  # nothing loaded at start
    with TestClient(app) as c:
        assert {m["name"]: m["loaded"] for m in c.get("/v1/models").json()["models"]} == {"alpha": False, "beta": False}
        assert c.get("/health").status_code == 200  # nothing asked for yet: nothing missing
        threading.Event().wait(0.3)
        assert beta.calls == 0  # the poller leaves a model nobody asked for alone
        results = []

        def ask():
            results.append(c.post("/v1/models/alpha/forecast", json=body("alpha")).status_code)

        threads = [threading.Thread(target=ask) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 6
        assert loads == [files["alpha", "1"]]  # six first requests at once, one load
        listed = {m["name"]: m["loaded"] for m in c.get("/v1/models").json()["models"]}
        assert listed == {"alpha": True, "beta": False}
        assert beta.calls == 0

        # a lazy model whose source fails: a one-line 503, and health names it
        beta.set(None, None)
        r = c.post("/v1/models/beta/forecast", json=body("beta"))
        assert r.status_code == 503 and "model 'beta': no version loaded" in r.json()["detail"]
        assert c.get("/health").status_code == 503 and "beta" in c.get("/health").json()["detail"]


def test_canary_picks_by_a_stable_hash_and_says_which_version_answered(tmp_path, files):
    share = 0.3
    assert canary_share(b"client-7", "alpha-forecaster") == canary_share(b"client-7", "alpha-forecaster")
    spread = [canary_share(f"client-{i}".encode(), "alpha-forecaster") for i in range(2000)]
    assert 0.27 < np.mean(np.array(spread) < share) < 0.33  # the share asked for, over many clients

    app = create_app(
        settings(tmp_path, "alpha", canary=share),
        sources={"alpha": {"challenger": Source("alpha", files["alpha", "2"], "2")}},
        source=Source("alpha", files["alpha", "1"], "1"),
        device="cpu",
        poll_seconds=60,
    )
    expect = {
        v: OnnxForecaster.from_path(files["alpha", v], device="cpu").predict_all(window("alpha"))[0][0, :, 0]
        for v in ("1", "2")
    }
    seen: dict[str, set] = {}
    with TestClient(app) as c:
        for i in range(60):
            key = f"client-{i % 20}"
            r = c.post("/v1/forecast", json=body("alpha"), headers={"X-Cellcast-Key": key})
            assert r.status_code == 200, r.text
            got = r.json()
            seen.setdefault(key, set()).add((got["model"]["version"], got["model"]["alias"]))
            v = got["model"]["version"]
            np.testing.assert_allclose(got["forecast"]["load"], expect[v], rtol=0, atol=1e-6)
            assert ("quantiles" in got) == (v == "2")  # the challenger's own answer, its quantiles with it
        assert all(len(s) == 1 for s in seen.values())  # a client meets one version
        on_canary = {k for k, s in seen.items() if s == {("2", "challenger")}}
        assert on_canary == {k for k in seen if canary_share(k.encode(), "alpha-forecaster") < share}
        assert 0 < len(on_canary) < 20
        # without the header, the body picks: the same body, the same version
        versions = {c.post("/v1/forecast", json=body("alpha", 0.5)).json()["model"]["version"] for _ in range(5)}
        assert len(versions) == 1

        m = metrics(c.get("/metrics").text)
        counts = {(dict(k)["version"], dict(k)["role"]): v for k, v in m["cellcast_forecasts_total"].items()}
        assert counts[("2", "challenger")] == 3 * len(on_canary) + 5 * (versions == {"2"})
        assert counts[("1", "champion")] + counts[("2", "challenger")] == 65
        listed = c.get("/v1/models").json()["models"][0]
        assert listed["challenger"]["version"] == "2" and listed["canary"] == share
    rows = live_rows(tmp_path, "alpha")
    assert set(rows["served"]) == {True}  # canary answers are served answers
    assert set(zip(rows["model_version"], rows["role"], strict=True)) == {("1", "champion"), ("2", "challenger")}


def test_a_canary_request_the_challenger_cannot_read_goes_to_the_champion_and_is_counted(tmp_path, files):
    # every request is the canary's, but the challenger reads 12 steps where the champion reads 24
    shorter = export(tmp_path, "alpha", 5, lookback=12)
    app = create_app(
        settings(tmp_path, "alpha", canary=1.0),
        sources={"alpha": {"challenger": Source("alpha", shorter, "2")}},
        source=Source("alpha", files["alpha", "1"], "1"),
        device="cpu",
        poll_seconds=60,
    )
    with TestClient(app) as c:
        for i in range(5):  # the champion's requests: the challenger cannot read them, the champion answers
            r = c.post("/v1/forecast", json=body("alpha", shift=i))
            assert r.status_code == 200 and r.json()["model"] == {
                "name": "alpha-forecaster",
                "version": "1",
                "alias": "champion",
            }, r.text
        for i in range(2):  # the challenger's: it answers them (the champion would have refused them)
            r = c.post("/v1/forecast", json=body("alpha", shift=i, lookback=12))
            assert r.status_code == 200 and r.json()["model"]["alias"] == "challenger", r.text
        # a request neither can read is a refusal, not a fallback
        assert c.post("/v1/forecast", json=body("alpha", lookback=7)).status_code == 422
        m = metrics(c.get("/metrics").text)
    fallbacks = {
        tuple(dict(k)[n] for n in ("name", "version")): v for k, v in m["cellcast_canary_fallbacks_total"].items()
    }
    assert fallbacks == {("alpha-forecaster", "2"): 5}
    answers = {(dict(k)["version"], dict(k)["role"]): v for k, v in m["cellcast_forecasts_total"].items()}
    assert answers == {("1", "champion"): 5, ("2", "challenger"): 2}


def test_shadow_answers_are_logged_never_returned(tmp_path, files):
    challenger = Source("alpha", None, None)  # no challenger yet
    app = create_app(
        settings(tmp_path, "alpha", shadow=True, live_log_flush_s=60),
        sources={"alpha": {"challenger": challenger}},
        source=Source("alpha", files["alpha", "1"], "1"),
        device="cpu",
        poll_seconds=0.05,
    )
    with TestClient(app) as c:
        r = c.post("/v1/forecast", json=body("alpha"))
        assert r.status_code == 200 and app.state.service.models["alpha"].challenger.last_error is None
        challenger.set(files["alpha", "2"], "2")  # the alias appears: the poller loads it
        deadline = 100
        while c.get("/v1/models").json()["models"][0]["challenger"] is None and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
        ids = []
        for i in range(3):
            r = c.post("/v1/forecast", json={"instances": [body("alpha", i), body("alpha", i + 1, timestamps=False)]})
            assert r.status_code == 200 and r.json()["model"] == {
                "name": "alpha-forecaster",
                "version": "1",
                "alias": "champion",
            }
            assert all("quantiles" not in f for f in r.json()["forecasts"])  # the challenger's never reach the caller
            ids.append(r.headers["x-request-id"])
    # after shutdown: the queue answered, the log flushed
    rows = live_rows(tmp_path, "alpha")
    assert list(rows.columns[:11]) == [
        "request_id",
        "logged_at",
        "model",
        "dataset",
        "model_version",
        "role",
        "served",
        "id",
        "origin",
        "timestamp",
        "step",
    ]
    assert {"load", "load_q0.1", "load_q0.9"} <= set(rows.columns) and "load_q0.5" not in rows.columns
    shadowed = rows[rows["request_id"].isin(ids)]
    by = shadowed.groupby(["model_version", "role", "served"]).size().to_dict()
    assert by == {("1", "champion", True): 3 * 2 * 4, ("2", "challenger", False): 3 * 2 * 4}
    assert rows["load_q0.1"][rows["model_version"] == "1"].isna().all()  # the champion has no quantiles
    one = shadowed[(shadowed["request_id"] == ids[0]) & (shadowed["model_version"] == "2")]
    stamped = one[one["timestamp"].notna()]
    assert len(stamped) == 4 and one["timestamp"].isna().sum() == 4  # the second series sent no timestamps
    assert stamped["origin"].iloc[0] == pd.Timestamp("2024-03-01 23:00")
    assert list(stamped["timestamp"]) == list(pd.date_range("2024-03-02", periods=4, freq="h"))
    assert list(stamped["step"]) == [1, 2, 3, 4] and stamped["id"].isna().all()
    expected = OnnxForecaster.from_path(files["alpha", "2"], device="cpu").predict_all(window("alpha"))[0]
    np.testing.assert_allclose(stamped["load"], expected[0, :, 0], rtol=0, atol=1e-6)
    schema = pq.read_schema(next((tmp_path / "forecasts/alpha/live").glob("*.parquet")))
    assert str(schema.field("logged_at").type) == "timestamp[ns, tz=UTC]"
    assert str(schema.field("origin").type) == "timestamp[ns]" and str(schema.field("step").type) == "int32"


def test_a_full_shadow_queue_drops_and_counts_never_delays(tmp_path, files, monkeypatch):
    from cellcast.pipeline.serving import canary

    gate, real = threading.Event(), canary.parse_body

    def parse(body, engine):  # the shadow worker stalls on its first job until the test lets it go
        if threading.current_thread().name == "cellcast-shadow":
            gate.wait(10)
        return real(body, engine)

    monkeypatch.setattr(canary, "parse_body", parse)
    app = create_app(
        settings(tmp_path, "alpha", shadow=True, shadow_queue=1),
        sources={"alpha": {"challenger": Source("alpha", files["alpha", "2"], "2")}},
        source=Source("alpha", files["alpha", "1"], "1"),
        device="cpu",
        poll_seconds=60,
    )
    with TestClient(app) as c:
        c.post("/v1/forecast", json=body("alpha"))  # taken by the worker, which stalls
        for _ in range(100):
            if app.state.service.shadow.jobs.empty():
                break
            threading.Event().wait(0.02)
        for i in range(3):  # one waits in the queue, two find it full
            assert c.post("/v1/forecast", json=body("alpha", i)).status_code == 200  # answered all the same
        m = metrics(c.get("/metrics").text)
        assert m["cellcast_shadow_dropped_total"][(("name", "alpha-forecaster"),)] == 2
        gate.set()
    rows = live_rows(tmp_path, "alpha")
    assert rows.groupby("served")["request_id"].nunique().to_dict() == {True: 4, False: 2}


def test_live_log_files_batches_and_limits(tmp_path):
    written, dropped = [], []
    log = LiveLog(
        lambda d: tmp_path / d / "live",
        flush_s=3600,
        max_rows=10,
        max_pending=16,
        on_written=lambda d, n: written.append((d, n)),
        on_dropped=dropped.append,
    )

    def answer(dataset, n):
        return Answer(
            request_id="r" * 32,
            logged_at=pd.Timestamp.now(tz="UTC").to_pydatetime(),
            model=f"{dataset}-forecaster",
            dataset=dataset,
            version="3",
            role="champion",
            served=True,
            y=np.ones((n, 2, 1)),
            q=None,
            targets=("y",),
            levels=(),
            stamps=[None] * n,
            origins=[None] * n,
            ids=[f"s{i}" for i in range(n)],
        )

    log.add(answer("a", 2))  # 4 rows wait: under max_rows, no file yet
    log.add(answer("b", 1))
    assert not list(tmp_path.glob("*/live/*.parquet"))
    log.add(answer("a", 3))  # 10 rows: the writer wakes
    for _ in range(100):
        if len(written) == 2:
            break
        threading.Event().wait(0.02)
    assert sorted(written) == [("a", 10), ("b", 2)]
    log.add(answer("a", 9))  # 18 rows: over max_pending, dropped and counted
    assert dropped == [18]
    log.close()
    files = sorted(tmp_path.glob("a/live/*.parquet"))
    assert len(files) == 1 and not list(tmp_path.glob("*/live/.*"))  # renamed into place, no temporary left
    name = files[0].name.split("-")
    assert len(name) == 3 and name[0].endswith("Z") and name[2] == "1.parquet"
    t = pq.read_table(files[0])
    assert t.num_rows == 10 and str(t.schema.field("timestamp").type) == "timestamp[ns]"  # typed when all null
    assert t.column("id").to_pylist()[:4] == ["s0", "s0", "s1", "s1"]

    # an earlier day's files are folded into one by the writer after its first write (then hourly)
    old = tmp_path / "c" / "live"
    old.mkdir(parents=True)
    for n in (1, 2):
        pq.write_table(t, old / f"20240101T0{n}0000000000Z-4242-{n}.parquet")
    log = LiveLog(lambda d: tmp_path / d / "live", flush_s=3600, keep_days=None)
    log.add(answer("c", 5))
    log.close()
    names = sorted(f.name for f in old.glob("*.parquet"))
    assert len(names) == 2 and names[0] == f"20240101T000000000000Z-day-{os.getpid()}.parquet"
    assert pq.read_table(old / names[0]).num_rows == 20


def test_live_log_off_writes_nothing(tmp_path, files):
    app = create_app(
        settings(tmp_path, "beta", live_log=False),
        source=Source("beta", files["beta", "1"], "1"),
        device="cpu",
        poll_seconds=60,
    )
    with TestClient(app) as c:
        assert c.post("/v1/forecast", json=body("beta")).status_code == 200
        assert c.get("/model").json()["version"] == "1"  # one model: the one-model routes as before
    assert not (tmp_path / "forecasts").exists()


@pytest.mark.integration
def test_cellcast_serve_all_follows_two_registered_models_and_shadows_a_challenger(trained_on_postgres, tmp_path):
    """`cellcast serve --all` as a person runs it, on the session's registry (PostgreSQL-backed MLflow server):
    the trained `pgload` model, and `pgfleet` registered here from the same run with v1 champion and v2 challenger;
    params.yaml turns shadow on for pgfleet only. Live rows of both versions land in forecasts/pgfleet/live/."""
    import os
    import signal
    import time

    import httpx
    import yaml
    from test_serve_process import start

    from cellcast.pipeline.registry import tracking
    from cellcast.pipeline.registry.promotion import Decision

    t = trained_on_postgres
    os.environ["MLFLOW_TRACKING_URI"] = t.mlflow
    try:
        tracking.configure(tmp_path)
        logged = t.v1.source.split("/models/")[1].split("/")[0]  # pgload v1's logged model, registered again
        fleet = "pgfleet-forecaster"
        if not tracking.list_versions(fleet):
            for _ in range(2):
                tracking.register_version(fleet, f"models:/{logged}", t.v1.run_id)
            tracking.apply_decision(fleet, 1, Decision(True, "champion for the fleet test", {}))
            tracking.apply_decision(fleet, 2, Decision(False, "challenger for the fleet test", {}))
        assert tracking.get_alias(fleet, "challenger").version == 2
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)

    params = yaml.safe_load((t.project / "params.yaml").read_text())
    params["serve"].update({"poll_seconds": 0.5, "live_log_flush_s": 0.5})
    params["datasets"].update({"pgload": {}, "pgfleet": {"serve": {"shadow": True}}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc, url, _ = start(tmp_path, "--device", "cpu", env={"MLFLOW_TRACKING_URI": t.mlflow}, names=("--all",))
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            listed = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
            assert {"pgload", "pgfleet"} <= set(listed)
            assert listed["pgfleet"]["version"] == "1" and listed["pgfleet"]["challenger"]["version"] == "2"
            assert listed["pgfleet"]["shadow"] and not listed["pgload"]["shadow"]
            info = c.get("/v1/models/pgload").json()
            rows = t.full.iloc[2000 - info["lookback"] : 2000]
            req = {
                "values": {v: rows[v].tolist() for v in info["variables"]},
                "timestamps": [pd.Timestamp(s).isoformat() for s in rows["time"]],
            }
            ids = {}
            for name in ("pgload", "pgfleet"):
                r = c.post(f"/v1/models/{name}/forecast", json=req)
                assert r.status_code == 200, r.text
                assert r.json()["model"]["version"] == ("1" if name == "pgfleet" else info["version"])
                assert r.json()["model"]["alias"] == "champion"
                ids[name] = r.headers["x-request-id"]
            deadline = time.monotonic() + 30

            def versions() -> set:  # the folder is made before its first file is renamed into it
                rows = live_rows(tmp_path, "pgfleet")
                return set() if rows.empty else set(rows["model_version"])

            while versions() != {"1", "2"}:
                assert time.monotonic() < deadline, "no shadow rows in the live log"
                time.sleep(0.2)
            m = metrics(c.get("/metrics").text)
            answers = {
                (dict(k)["name"], dict(k)["version"], dict(k)["role"], dict(k)["served"]): v
                for k, v in m["cellcast_forecasts_total"].items()
            }
            assert answers[(fleet, "2", "challenger", "false")] == 1 and answers[(fleet, "1", "champion", "true")] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    fleet_rows = live_rows(tmp_path, "pgfleet")
    h = info["horizon"]
    by = fleet_rows.groupby(["model_version", "role", "served"]).size().to_dict()
    assert by == {("1", "champion", True): h, ("2", "challenger", False): h}
    assert set(fleet_rows["request_id"]) == {ids["pgfleet"]}
    assert fleet_rows["timestamp"].notna().all() and (fleet_rows["origin"] == pd.Timestamp(rows["time"].iloc[-1])).all()
    load_rows = live_rows(tmp_path, "pgload")
    assert len(load_rows) == h and load_rows["served"].all() and set(load_rows["request_id"]) == {ids["pgload"]}
