"""The service: forecasts equal the batch path, hot swaps under load lose no request (a real uvicorn on
127.0.0.1: the integration tier), broken versions are not swapped in, bad requests get a 4xx with a message
(the app in process, through Starlette's TestClient, lifespan and alias polling included)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from uvicorn_server import ServerThread

from cellcast.pipeline.config import Settings
from cellcast.pipeline.data.datasets import load_bundled
from cellcast.pipeline.engine.inference import OnnxForecaster
from cellcast.pipeline.engine.onnx_export import export_onnx
from cellcast.pipeline.errors import NotFoundError
from cellcast.pipeline.modeling.model import ModelSpec, build
from cellcast.pipeline.serving.service import create_app

VARS, LOOKBACK, HORIZON = ["Demand", "Temperature", "WorkDay"], 48, 6
SETTINGS = Settings(dataset="elecdemand")


@pytest.fixture(autouse=True)
def _in_a_folder_of_its_own(tmp_path, monkeypatch):
    """The service writes its live forecast log under forecasts/ (params.yaml paths): here, not in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return load_bundled("elecdemand")


@pytest.fixture(scope="module")
def models(tmp_path_factory, frame):
    """Two good versions (different weights), one with NaN weights (fails its smoke forecast), one corrupt file."""
    d = tmp_path_factory.mktemp("serve-models")
    x = frame[VARS].to_numpy(np.float32)
    out = {}
    for version, seed in (("1", 1), ("2", 2), ("4", 4)):
        spec = ModelSpec(
            cell="gru",
            n_vars=3,
            target_idx=[0],
            lookback=LOOKBACK,
            horizon=HORIZON,
            hidden_size=8,
            rnn_steps=12,
            mean=x.mean(0).tolist(),
            std=x.std(0).tolist(),
        )
        torch.manual_seed(seed)
        model = build(spec)
        if version == "4":
            with torch.no_grad():
                model.head.bias.fill_(float("nan"))
        out[version] = export_onnx(
            model,
            d / f"v{version}.onnx",
            {"variables": VARS, "targets": ["Demand"], "freq": "30min", "dataset": "elecdemand"},
        )
    out["3"] = d / "v3.onnx"
    out["3"].write_bytes(b"\x08\x07garbage, not a model")
    return out


class Source:
    """A model source the test moves like a registry alias."""

    def __init__(self, path, version):
        self.set(path, version)

    def set(self, path, version):
        self.value = (path, SimpleNamespace(name="elecdemand-forecaster", version=version, run_id=f"run{version}"))

    def __call__(self):
        return self.value


def body(frame: pd.DataFrame, end: int, timestamps: bool = True) -> dict:
    rows = frame.iloc[end - LOOKBACK : end]
    out = {"values": {v: rows[v].tolist() for v in VARS}}
    if timestamps:
        out["timestamps"] = [t.isoformat() for t in rows["timestamp"]]
    return out


def window(frame: pd.DataFrame, end: int) -> np.ndarray:
    return frame[VARS].to_numpy(np.float32)[end - LOOKBACK : end]


def wait_for(cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_forecasts_equal_the_batch_path(models, frame):
    engine = OnnxForecaster.from_path(models["1"], device="cpu")
    app = create_app(SETTINGS, source=Source(models["1"], "1"), device="cpu", poll_seconds=60)
    with TestClient(app) as c:
        assert c.get("/health").json()["version"] == "1"
        info = c.get("/model").json()
        assert info["version"] == "1" and info["provider"] == "CPUExecutionProvider" and info["alias"] == "champion"
        assert (info["lookback"], info["horizon"], info["variables"]) == (LOOKBACK, HORIZON, VARS)
        assert info["last_error"] is None and info["loaded_at"]

        r = c.post("/v1/forecast", json=body(frame, 1000))
        assert r.status_code == 200, r.text
        got = r.json()
        expected = engine.predict(window(frame, 1000)[None])[0, :, 0]
        np.testing.assert_allclose(got["forecast"]["Demand"], expected, rtol=0, atol=1e-6)
        last = frame["timestamp"].iloc[999]
        assert got["timestamps"] == [(last + pd.Timedelta(minutes=30) * (i + 1)).isoformat() for i in range(HORIZON)]
        assert got["model"]["version"] == "1" and got["provider"] == "CPUExecutionProvider"

        # several series in one request: the same numbers as one batch through the engine
        ends = [500, 3000, 9000]
        r = c.post("/v1/forecast", json={"instances": [body(frame, e, timestamps=False) for e in ends]})
        assert r.status_code == 200, r.text
        batch = engine.predict(np.stack([window(frame, e) for e in ends]))
        for i, item in enumerate(r.json()["forecasts"]):
            assert item["timestamps"] is None
            np.testing.assert_allclose(item["forecast"]["Demand"], batch[i, :, 0], rtol=0, atol=1e-6)


@pytest.mark.integration
def test_hot_swap_under_load_and_broken_versions(models, frame):
    expect = {
        v: OnnxForecaster.from_path(models[v], device="cpu").predict(window(frame, 2000)[None])[0, :, 0]
        for v in ("1", "2")
    }
    assert np.abs(expect["1"] - expect["2"]).max() > 1e-3  # the versions are distinguishable
    source = Source(models["1"], "1")
    app = create_app(SETTINGS, source=source, device="cpu", poll_seconds=0.1)
    results, errors = [], []
    stop = threading.Event()

    def client(url):
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(150):  # bounded in count and (below) in time
                if stop.is_set():
                    return
                try:
                    r = c.post("/v1/forecast", json=body(frame, 2000))
                    results.append((r.status_code, r.json()))
                except Exception as e:  # a lost request is a failure of this test
                    errors.append(repr(e))

    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        threads = [threading.Thread(target=client, args=(srv.url,)) for _ in range(4)]
        for t in threads:
            t.start()
        assert wait_for(lambda: len(results) >= 20)
        source.set(models["2"], "2")
        assert wait_for(lambda: c.get("/model").json()["version"] == "2")
        n_at_swap = len(results)
        assert wait_for(lambda: len(results) >= n_at_swap + 20)
        stop.set()
        for t in threads:
            t.join(timeout=60)

        assert not errors
        assert all(status == 200 for status, _ in results), [j for s, j in results if s != 200][:3]
        seen = {j["model"]["version"] for _, j in results}
        assert seen == {"1", "2"}
        for _, j in results:  # each answer is wholly the old or wholly the new model
            np.testing.assert_allclose(j["forecast"]["Demand"], expect[j["model"]["version"]], rtol=0, atol=1e-6)
        assert c.get("/model").json()["swaps"] == 1

        # a corrupt file, then a model whose smoke forecast is NaN: neither is swapped in
        for bad, why in (("3", "could not load"), ("4", "smoke forecast failed")):
            source.set(models[bad], bad)
            assert wait_for(lambda bad=bad: f"version {bad}" in (c.get("/model").json()["last_error"] or ""))
            info = c.get("/model").json()
            assert info["version"] == "2" and why in info["last_error"]
            r = c.post("/v1/forecast", json=body(frame, 2000))
            assert r.status_code == 200 and r.json()["model"]["version"] == "2"

        # the source itself failing (registry down, alias removed) keeps the old model too
        def gone():
            raise NotFoundError("model 'elecdemand-forecaster' has no alias 'champion'")

        app.state.service.holder.source = gone
        assert wait_for(lambda: "model source" in (c.get("/model").json()["last_error"] or ""))
        assert c.post("/v1/forecast", json=body(frame, 2000)).status_code == 200
        assert c.post("/v1/forecast", content=b"[", headers={"content-type": "application/json"}).status_code == 400
        app.state.service.holder.source = source  # back: the failures stop
        time.sleep(0.3)

        # what happened, as Prometheus reads it
        m = metrics(c.get("/metrics").text)
        forecasts = m["cellcast_requests_total"]
        assert forecasts[(("method", "POST"), ("path", "/v1/forecast"), ("status", "200"))] == len(results) + 3
        assert forecasts[(("method", "POST"), ("path", "/v1/forecast"), ("status", "400"))] == 1
        model = {dict(k)["version"]: v for k, v in m["cellcast_model_info"].items()}
        assert model == {"1": 0, "2": 1}
        assert {dict(k)["provider"] for k in m["cellcast_model_info"]} == {"CPUExecutionProvider"}
        assert m["cellcast_model_swaps_total"][()] == 1
        # v3 and v4 once each, the source at every poll while it failed
        assert m["cellcast_model_swap_failures_total"][()] == app.state.service.holder.failures >= 3
        last = [dict(k) for k, v in m["cellcast_model_last_swap_error"].items() if v == 1]
        assert len(last) == 1 and last[0]["version"] == "" and "no alias 'champion'" in last[0]["error"]
        assert m["cellcast_model_last_swap_error_timestamp_seconds"][()] > time.time() - 60
        hist = m["cellcast_request_duration_seconds_count"]
        assert hist[(("path", "/v1/forecast"),)] == len(results) + 4
        assert m["cellcast_requests_in_flight"][()] == 1  # this scrape


def metrics(text: str) -> dict:
    """Prometheus text -> {sample name: {sorted label pairs: value}}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_timestamps_fast_path_answers_as_the_pandas_path(monkeypatch):
    """The common ISO shapes on a fixed step are checked without pandas; each answer (a forecast's timestamps)
    must be the reference path's, and anything else must reach that path (its 422 wording included)."""
    from cellcast.pipeline.serving import timestamps as rq

    def hours(start, n=6, step="1h", zone=""):
        return [(pd.Timestamp(start) + pd.Timedelta(step) * i).isoformat() + zone for i in range(n)]

    cases = [
        ("h", None, hours("2024-01-01")),
        ("h", None, hours("2024-01-01", zone="Z")),
        ("h", None, hours("2024-01-01", zone="+05:30")),
        ("h", None, hours("2024-01-01", zone="-05:00")),
        ("h", "2023-01-01T00:30:00", hours("2024-01-01 00:30")),  # on the grid counted from its origin
        ("h", "2023-01-01T00:30:00", hours("2024-01-01")),  # off it
        ("30min", None, [t.replace("T", " ")[:16] for t in hours("2024-01-01", step="30min")]),
        ("D", None, [t[:10] for t in hours("2024-01-01", step="1D")]),
        ("D", None, hours("2024-01-01 06:00", step="1D")),
        ("36h", None, hours("2024-01-01", step="36h")),  # a day or longer: every stamp at midnight
        (None, None, hours("2024-01-01")),
        (None, None, hours("2024-01-01")[::-1]),
        ("h", None, hours("2024-01-01")[:5] + ["2024-01-01T05:00:00.5"]),
        ("s", None, hours("2024-01-01", step="1s", zone="")[:0] + [f"2024-01-01T00:00:0{i}.123456" for i in range(6)]),
        ("h", None, hours("2024-01-01", zone="Z")[:3] + hours("2024-01-01 03:00", 3, zone="+00:00")),  # mixed zones
        ("MS", None, ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01", "2024-06-01"]),
        ("h", None, ["2024-02-30T00:00:00"] * 6),
        ("h", None, hours("2262-04-11 18:00")),
    ]
    fast_answers = 0
    for freq, origin, raw in cases:

        def answer(raw=raw, freq=freq, origin=origin):
            try:
                return rq.check_timestamps(raw, "body.timestamps", len(raw), 3, freq, origin)
            except rq.BadRequest as e:
                return e.status, e.message

        got = answer()
        fast_answers += rq._fast_timestamps(raw, 3, freq, origin) is not None
        with monkeypatch.context() as mp:
            mp.setattr(rq, "_fast_timestamps", lambda *a: None)
            assert got == answer(), (freq, origin, raw)
    assert fast_answers == 9  # the shapes it is for do take it


def test_bad_requests_get_4xx_with_a_message(models, frame):
    app = create_app(SETTINGS, source=Source(models["1"], "1"), device="cpu", poll_seconds=60, max_body_bytes=200_000)
    good = body(frame, 1000)

    def with_values(**changes):
        b = {"timestamps": good["timestamps"], "values": dict(good["values"])}
        b["values"].update(changes)
        return b

    def with_stamps(stamps):
        return {"timestamps": stamps, "values": good["values"]}

    short = with_values(Demand=good["values"]["Demand"][:-1])
    nan_json = (
        '{"values": {"Demand": [NaN'
        + ", 1.0" * (LOOKBACK - 1)
        + '], "Temperature": '
        + str(good["values"]["Temperature"])
        + ', "WorkDay": '
        + str(good["values"]["WorkDay"])
        + "}}"
    )
    irregular = list(good["timestamps"])
    irregular[10] = irregular[11]
    skipped = list(good["timestamps"][:20]) + [
        (pd.Timestamp(t) + pd.Timedelta(minutes=30)).isoformat() for t in good["timestamps"][20:]
    ]
    hourly = [(pd.Timestamp("2014-01-01") + pd.Timedelta(hours=i)).isoformat() for i in range(LOOKBACK)]
    corpus = [
        ("too short", {"json": short}, 422, "expected 48 observations"),
        ("NaN literal", {"content": nan_json, "headers": {"content-type": "application/json"}}, 422, "NaN"),
        (
            "a string",
            {"json": with_values(Temperature=["warm"] * LOOKBACK)},
            422,
            "values.Temperature[0]: expected a number, got str",
        ),
        ("a null", {"json": with_values(WorkDay=[None] + good["values"]["WorkDay"][1:])}, 422, "got null"),
        ("a bool", {"json": with_values(WorkDay=[True] * LOOKBACK)}, 422, "got bool"),
        (
            "missing variable",
            {"json": {"values": {"Demand": good["values"]["Demand"]}}},
            422,
            "missing Temperature, WorkDay",
        ),
        ("unknown variable", {"json": with_values(Wind=[1.0] * LOOKBACK)}, 422, "unknown Wind"),
        ("values not an object", {"json": {"values": [1, 2, 3]}}, 422, "body.values: expected an object"),
        ("not an object", {"json": [1, 2, 3]}, 422, "expected a JSON object"),
        ("unknown field", {"json": {**good, "horizon": 3}}, 422, "unknown field(s) horizon"),
        (
            "bad JSON",
            {"content": b'{"values": ', "headers": {"content-type": "application/json"}},
            400,
            "not valid JSON",
        ),
        (
            "not UTF-8",
            {"content": b"\xff\xfe{", "headers": {"content-type": "application/json"}},
            400,
            "not valid JSON",
        ),
        (
            "wrong content type",
            {"content": b"Demand=1", "headers": {"content-type": "text/plain"}},
            415,
            "content type 'text/plain'",
        ),
        (
            "oversized",
            {"content": b"[" + b"1.0," * 60_000 + b"1]", "headers": {"content-type": "application/json"}},
            413,
            "over the limit of 200000 bytes",
        ),
        (
            "irregular timestamps",
            {"json": with_stamps(irregular)},
            422,
            "timestamps[11]: 2014-01-21 01:30:00 does not come after",
        ),
        ("a skipped step", {"json": with_stamps(skipped)}, 422, "breaks the regular 30min steps"),
        ("wrong step", {"json": with_stamps(hourly)}, 422, "does not match the model's frequency 30min"),
        ("not a date", {"json": with_stamps(["yesterday"] * LOOKBACK)}, 422, "not ISO 8601"),
        ("too few timestamps", {"json": with_stamps(good["timestamps"][:5])}, 422, "got 5 items"),
        ("empty instances", {"json": {"instances": []}}, 422, "non-empty list"),
        ("bad instance", {"json": {"instances": [good, {"values": {}}]}}, 422, "instances[1].values: missing Demand"),
    ]
    with TestClient(app) as c:
        for what, kwargs, status, message in corpus:
            r = c.post("/v1/forecast", **kwargs)
            assert r.status_code == status, (what, r.status_code, r.text)
            assert message in r.json()["detail"], (what, r.json())
        assert c.get("/v1/forecast").status_code == 405
        r = c.post("/v1/forecast", json=good)  # still serving after all of that
        assert r.status_code == 200 and len(r.json()["forecast"]["Demand"]) == HORIZON


def test_bearer_token(models, frame):
    app = create_app(SETTINGS, source=Source(models["1"], "1"), device="cpu", poll_seconds=60, token="s3cret")
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200  # liveness stays open
        assert c.post("/v1/forecast", json=body(frame, 1000)).status_code == 401
        assert c.get("/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.post("/v1/forecast", json=body(frame, 1000), headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/model", headers={"Authorization": "Bearer s3cret"}).json()["version"] == "1"


def test_startup_without_a_model_is_one_error(tmp_path):
    def none():
        raise NotFoundError("no champion for model 'elecdemand-forecaster'")

    with pytest.raises(NotFoundError, match="no champion"):
        create_app(SETTINGS, source=none, device="cpu")


def test_business_day_timestamps_continue_on_the_calendar(tmp_path):
    spec = ModelSpec(cell="rnn", n_vars=1, target_idx=[0], lookback=10, horizon=3, hidden_size=4, rnn_steps=5)
    torch.manual_seed(0)
    path = export_onnx(build(spec), tmp_path / "b.onnx", {"variables": ["Close"], "freq": "B"})
    app = create_app(Settings(dataset="sp500"), source=Source(path, "1"), device="cpu", poll_seconds=60)
    stamps = pd.bdate_range("2024-03-04", periods=10)  # Mon 4 .. Fri 15 March
    with TestClient(app) as c:
        r = c.post(
            "/v1/forecast", json={"timestamps": [t.isoformat() for t in stamps], "values": {"Close": [1.0] * 10}}
        )
        assert r.status_code == 200, r.text
        assert r.json()["timestamps"] == ["2024-03-18T00:00:00", "2024-03-19T00:00:00", "2024-03-20T00:00:00"]
        daily = pd.date_range("2024-03-04", periods=10)  # crosses a weekend: not business days
        r = c.post("/v1/forecast", json={"timestamps": [t.isoformat() for t in daily], "values": {"Close": [1.0] * 10}})
        assert r.status_code == 422 and "does not match the model's frequency B" in r.json()["detail"]


def _toy(tmp_path, name: str, freq: str, **meta) -> Path:
    spec = ModelSpec(
        cell="gru",
        n_vars=1,
        target_idx=[0],
        lookback=10,
        horizon=3,
        hidden_size=4,
        rnn_steps=5,
        mean=[50.0],
        std=[10.0],
    )
    torch.manual_seed(0)
    return export_onnx(build(spec), tmp_path / f"{name}.onnx", {"variables": ["Close"], "freq": freq, **meta})


def test_hostile_bodies_get_a_4xx_never_a_500(tmp_path):
    """A 400-digit integer (OverflowError before), deep nesting (RecursionError before), floats that overflow
    inside the model: each is a 4xx with one line."""
    path = _toy(tmp_path, "h", "D")
    engine = OnnxForecaster.from_path(path, device="cpu")
    app = create_app(Settings(dataset="toy"), source=Source(path, "1"), device="cpu", poll_seconds=60)
    good = [50.0] * 10
    huge = 3.0e38
    overflow = engine.predict(np.full((1, 10, 1), huge, np.float32))
    json_body = {"content-type": "application/json"}
    with TestClient(app) as c:
        big = b'{"values": {"Close": [' + b"9" * 400 + b", 1, 1, 1, 1, 1, 1, 1, 1, 1]}}"
        r = c.post("/v1/forecast", content=big, headers=json_body)
        assert r.status_code == 422 and r.json()["detail"] == (
            "body.values.Close[0]: expected a number, got an integer beyond the float range (1 such values)"
        )
        for nested in (
            b'{"values": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            b"[" * 200_000 + b"]" * 200_000,
            b'{"instances": [' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"]}",
        ):
            r = c.post("/v1/forecast", content=nested, headers=json_body)
            assert r.status_code == 400 and "not valid JSON (recursion limit exceeded" in r.json()["detail"], r.text
        r = c.post("/v1/forecast", json={"values": {"Close": [1e300] * 10}})
        assert r.status_code == 422 and "beyond the float32 range" in r.json()["detail"]
        r = c.post("/v1/forecast", json={"values": {"Close": [huge] * 10}})
        if np.isfinite(overflow).all():
            assert r.status_code == 200
        else:
            assert r.status_code == 422 and "the model's forecast is not finite" in r.json()["detail"], r.text
        r = c.post("/v1/forecast", json={"values": {"Close": good}, "timestamps": ["9999-12-31"] * 10})
        assert r.status_code == 422, r.text
        for start in ("9999-12-20", "0001-01-01", "1677-09-21"):  # calendar edges: an answer, not a 500
            stamps = [t.isoformat() for t in pd.date_range(start, periods=10, freq="D")]
            r = c.post("/v1/forecast", json={"values": {"Close": good}, "timestamps": stamps})
            assert r.status_code in (200, 422), r.text
        assert c.post("/v1/forecast", json={"values": {"Close": good}}).status_code == 200


def test_timestamps_off_the_models_grid_are_refused_not_shifted(tmp_path):
    daily = _toy(tmp_path, "d", "D")
    nine = _toy(tmp_path, "n", "D", grid_origin="2020-01-01T09:00:00")
    cgm = _toy(tmp_path, "c", "5min", grid_origin="2010-03-24T09:51:00")  # readings at :51, :56, :01...
    values = {"Close": [50.0] * 10}

    def ask(path, start, freq):
        app = create_app(Settings(dataset="toy"), source=Source(path, "1"), device="cpu", poll_seconds=60)
        stamps = [t.isoformat() for t in pd.date_range(start, periods=10, freq=freq)]
        with TestClient(app) as c:
            r = c.post("/v1/forecast", json={"values": values, "timestamps": stamps})
        return r.status_code, r.json()

    code, got = ask(daily, "2024-03-01 06:30", "D")
    assert code == 422 and got["detail"] == (
        "body.timestamps[0]: 2024-03-01 06:30:00 is off the model's D grid (at "
        "midnight; 10 timestamps off it): send the observations' own timestamps"
    )
    code, got = ask(daily, "2024-03-01", "D")
    assert code == 200 and got["timestamps"][0] == "2024-03-11T00:00:00"
    code, got = ask(nine, "2024-03-01 09:00", "D")  # a daily model whose days start at 09:00
    assert code == 200 and got["timestamps"][0] == "2024-03-11T09:00:00"
    code, got = ask(nine, "2024-03-01", "D")
    assert code == 422 and "counted from 2020-01-01 09:00:00" in got["detail"]
    code, got = ask(cgm, "2024-03-01 10:01", "5min")
    assert code == 200 and got["timestamps"][0] == "2024-03-01T10:51:00"
    code, got = ask(cgm, "2024-03-01 10:00", "5min")
    assert code == 422 and "off the model's 5min grid (counted from 2010-03-24 09:51:00" in got["detail"]


def test_values_outside_the_models_training_bounds_are_refused(tmp_path):
    path = _toy(tmp_path, "b", "D", bounds={"Close": [0.0, 100.0]})
    app = create_app(Settings(dataset="toy"), source=Source(path, "1"), device="cpu", poll_seconds=60)
    inside = [50.0] * 10
    outside = [50.0, 50.0, 50.0, 150.0, -3.0, 50.0, 50.0, 50.0, 50.0, 50.0]
    with TestClient(app) as c:
        r = c.post("/v1/forecast", json={"values": {"Close": outside}})
        assert r.status_code == 422 and r.json()["detail"] == (
            "body.values.Close: 2 values outside the plausible range [0, 100] profiled on the model's training data "
            "(e.g. 150 at [3])"
        )
        r = c.post("/v1/forecast", json={"instances": [{"values": {"Close": inside}}, {"values": {"Close": outside}}]})
        assert r.status_code == 422 and r.json()["detail"].startswith("instances[1].values.Close: 2 values outside")
        assert c.post("/v1/forecast", json={"values": {"Close": inside}}).status_code == 200
        # the schema says so too
        series = c.get("/openapi.json").json()["components"]["schemas"]["Series"]
        close = series["properties"]["values"]["properties"]["Close"]
        assert (close["minItems"], close["maxItems"], close["items"]["minimum"], close["items"]["maximum"]) == (
            10,
            10,
            0.0,
            100.0,
        )


def test_the_openapi_schema_declares_the_body_and_every_refusal(models):
    app = create_app(SETTINGS, source=Source(models["1"], "1"), device="cpu", poll_seconds=60)
    with TestClient(app) as c:
        doc = c.get("/openapi.json").json()
    post = doc["paths"]["/v1/forecast"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert body == [{"$ref": "#/components/schemas/Series"}, {"$ref": "#/components/schemas/Batch"}]
    assert {"200", "400", "401", "413", "415", "422", "503"} <= set(post["responses"])
    series = doc["components"]["schemas"]["Series"]
    assert series["additionalProperties"] is False and series["required"] == ["values"]
    values = series["properties"]["values"]
    assert values["required"] == VARS and values["additionalProperties"] is False
    assert all(values["properties"][v]["minItems"] == LOOKBACK == values["properties"][v]["maxItems"] for v in VARS)
    assert doc["components"]["schemas"]["Batch"]["properties"]["instances"]["minItems"] == 1


def test_malformed_bounds_in_the_metadata_are_left_out_not_a_500(tmp_path):
    path = _toy(tmp_path, "m", "D", bounds={"Close": [None, "x"], "Other": [1, 2]})
    app = create_app(Settings(dataset="toy"), source=Source(path, "1"), device="cpu", poll_seconds=60)
    with TestClient(app) as c:
        assert c.post("/v1/forecast", json={"values": {"Close": [500.0] * 10}}).status_code == 200
        assert c.get("/openapi.json").status_code == 200


# ---------------------------------------------------------------- known-future inputs and quantiles

FUTURE_NAMES, FUTURE_KINDS = (
    ["tod_sin", "tod_cos", "dow_sin", "dow_cos", "holiday", "WorkDay"],
    ["calendar"] * 5 + ["user"],
)
CALENDAR = {"parts": ["tod", "dow", "holiday"], "country": "AU", "subdiv": "VIC", "timezone": None}
LEVELS = [0.05, 0.1, 0.5, 0.9, 0.95]


@pytest.fixture(scope="module")
def future_model(tmp_path_factory, frame):
    """A model reading the calendar (time of day, day of week, Victorian holidays) and WorkDay for the horizon,
    forecasting five quantiles."""
    from cellcast.pipeline.modeling.model import Forecaster

    x = frame[VARS].to_numpy(np.float32)
    spec = ModelSpec(
        cell="gru",
        n_vars=3,
        target_idx=[0],
        lookback=LOOKBACK,
        horizon=HORIZON,
        hidden_size=8,
        rnn_steps=12,
        anchor_season=48,
        anchor="linear",
        n_future=6,
        decoder=True,
        quantiles=LEVELS,
        future_mean=[0, 0, 0, 0, 0, 0.68],
        future_std=[1, 1, 1, 1, 1, 0.47],
        mean=x.mean(0).tolist(),
        std=x.std(0).tolist(),
    )
    model = Forecaster(spec).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    path = export_onnx(
        model,
        tmp_path_factory.mktemp("future") / "m.onnx",
        {
            "variables": VARS,
            "targets": ["Demand"],
            "freq": "30min",
            "dataset": "elecdemand",
            "future_names": FUTURE_NAMES,
            "future_kinds": FUTURE_KINDS,
            "calendar": CALENDAR,
            "grid_origin": "2014-01-01T00:00:00",
            "bounds": {"WorkDay": [-1.0, 2.0]},
        },
    )
    return path


def test_the_service_takes_known_future_values_computes_the_calendar_and_answers_quantiles(future_model, frame):
    from cellcast.pipeline.data.windowset import future_block

    engine = OnnxForecaster.from_path(future_model, device="cpu")
    app = create_app(SETTINGS, source=Source(future_model, "7"), device="cpu", poll_seconds=60)
    end = 1000
    stamps = pd.DatetimeIndex(frame["timestamp"].iloc[end : end + HORIZON])
    workday = frame["WorkDay"].iloc[end : end + HORIZON].tolist()
    with TestClient(app) as c:
        info = c.get("/model").json()
        assert info["quantiles"] == LEVELS and {"name": "WorkDay", "kind": "user"} in info["future"]
        r = c.post("/v1/forecast", json={**body(frame, end), "future": {"WorkDay": workday}})
        assert r.status_code == 200, r.text
        got = r.json()
        block = future_block(FUTURE_NAMES, FUTURE_KINDS, CALENDAR, "30min", stamps, {"WorkDay": np.array(workday)})
        y, q, _ = engine.predict_all(window(frame, end)[None], block[None])
        np.testing.assert_allclose(got["forecast"]["Demand"], y[0, :, 0], atol=1e-6)
        qs = got["quantiles"]["Demand"]
        assert list(qs) == ["0.05", "0.1", "0.5", "0.9", "0.95"] and qs["0.5"] == got["forecast"]["Demand"]
        np.testing.assert_allclose(qs["0.95"], q[0, :, 0, 4], atol=1e-6)
        assert all(a <= b for lo, hi in zip(list(qs.values()), list(qs.values())[1:]) for a, b in zip(lo, hi))

        refusals = [
            (
                {**body(frame, end)},
                "body.future: missing WorkDay (the model needs 6 values from "
                f"{stamps[0].isoformat()} of each of WorkDay)",
            ),
            (
                {**body(frame, end), "future": {"WorkDay": workday[:4]}},
                f"body.future.WorkDay: no value for {stamps[4].isoformat()} (2 of the 6 horizon steps have none); "
                "known-future values are never filled: send all 6",
            ),
            (
                {**body(frame, end), "future": {"WorkDay": [1, 1, None, 1, 1, 1]}},
                f"body.future.WorkDay: no value for {stamps[2].isoformat()} (1 of the 6 horizon steps have none)",
            ),
            (
                {**body(frame, end, timestamps=False), "future": {"WorkDay": workday}},
                "body.timestamps: required: the model reads calendar features of the horizon (tod_sin, tod_cos",
            ),
            ({**body(frame, end), "future": {"WorkDay": workday, "Price": workday}}, "body.future: unknown Price"),
            (
                {**body(frame, end), "future": {"WorkDay": [1, 1, 9, 1, 1, 1]}},
                "body.future.WorkDay: 1 values outside the plausible range [-1, 2]",
            ),
            (
                {**body(frame, end), "future": {"WorkDay": [1, 1, "x", 1, 1, 1]}},
                "body.future.WorkDay[2]: expected a number, got str",
            ),
        ]
        for payload, needle in refusals:
            r = c.post("/v1/forecast", json=payload)
            assert r.status_code == 422 and needle in r.json()["detail"], (needle, r.text)
        schema = c.get("/openapi.json").json()["components"]["schemas"]["Series"]
        assert schema["required"] == ["values", "timestamps", "future"]
        assert schema["properties"]["future"]["properties"]["WorkDay"]["minItems"] == HORIZON
