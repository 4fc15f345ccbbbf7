"""MLflow on a real PostgreSQL (a throwaway Debian cluster) behind a real `mlflow server`, artifacts in a shared
folder: the training flow, alias moves, rollback and the service's alias polling; promotions racing from several
processes leave one champion and a `previous` chain that holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

pytestmark = pytest.mark.integration


def _aliases(name: str) -> dict[str, int]:
    from cellcast.pipeline.registry import tracking

    return {a: v.version for v in tracking.list_versions(name) for a in v.aliases}


def _tables(postgres_url: str, sql: str) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(postgres_url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def test_training_flow_alias_moves_rollback_and_service_polling(trained_on_postgres, postgres_url, monkeypatch):
    from uvicorn_server import ServerThread

    from cellcast.pipeline.registry import tracking
    from cellcast.pipeline.registry.promotion import Decision
    from cellcast.pipeline.serving.service import create_app
    from cellcast.pipeline.serving.swap import registry_source

    t = trained_on_postgres  # the training flow ran on this store (tests/conftest.py)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", t.mlflow)
    monkeypatch.chdir(t.project)
    assert tracking.configure() == t.mlflow and t.outcome.tracking_uri == t.mlflow
    name, v1 = t.model, t.v1
    assert t.outcome.version == 1 and v1.tags["promotion.decision"] == "promoted" and v1.tags["data_md5"]
    assert v1.source.startswith("mlflow-artifacts:")  # served by the server, from its folder
    # the registry and the runs live in PostgreSQL, not in a file beside the project
    assert (name,) in _tables(postgres_url, "SELECT name FROM registered_models")
    assert _tables(postgres_url, f"SELECT count(*) FROM runs WHERE run_uuid = '{v1.run_id}'") == [(1,)]
    assert not (t.project / ".cellcast" / "mlflow.db").exists()

    # the service follows the alias on this store: a promotion, then a rollback, each swapped in
    champion = tracking.get_alias(name, "champion").version
    app = create_app(t.settings, source=registry_source(t.settings), device="cpu", poll_seconds=0.2)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/model").json()["version"] == str(champion)
        logged = v1.source.split("/models/")[1].split("/")[0]  # v1's logged model (m-...), registered again
        new = tracking.register_version(name, f"models:/{logged}", v1.run_id, tags={"candidate": "again"})
        tracking.apply_decision(
            name,
            new,
            Decision(True, "promoted by this test", {"champion_version": champion}),
            expected_champion=champion,
        )
        assert _aliases(name) == {"champion": new, "challenger": new, "previous": champion}
        assert tracking.get_version(name, new).tags["promotion.replaced"] == str(champion)
        assert wait_for(lambda: c.get("/model").json()["version"] == str(new))
        assert tracking.rollback(name).version == champion
        assert _aliases(name) == {"champion": champion, "challenger": new, "previous": new}
        assert wait_for(lambda: c.get("/model").json()["version"] == str(champion))
        info = c.get("/model").json()
        assert info["swaps"] == 2 and info["last_error"] is None
        assert c.post("/v1/forecast", json={"values": {}}).status_code == 422  # it answers; 4xx as ever


def wait_for(cond, timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


RACER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from cellcast.pipeline.registry import tracking
    from cellcast.pipeline.registry.promotion import Decision

    name, version, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    tracking.configure()
    tracking.get_alias(name, "champion")       # connected and warm before the start
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    tries = []
    for _ in range(20):
        # decide against the champion as it is now, as the training flow does; apply only if it still is
        champ = tracking.get_alias(name, "champion").version
        got = tracking.apply_decision(name, version, Decision(True, f"racer v{version} beats v{champ}",
                                                              {"champion_version": champ}), expected_champion=champ)
        tries.append(got.tags["promotion.decision"])
        if tries[-1] == "promoted":
            break
    print(json.dumps(tries), flush=True)
""")


def test_concurrent_promotions_leave_one_champion_and_a_valid_previous_chain(mlflow_on_postgres, tmp_path, monkeypatch):
    from cellcast.pipeline.registry import tracking
    from cellcast.pipeline.registry.promotion import Decision

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_on_postgres)
    monkeypatch.chdir(tmp_path)
    tracking.configure()
    name = "race-forecaster"
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not loaded by anyone here")
    with tracking.parent_run("race"):
        with tracking.candidate_run("x") as rid:
            tracking.log_artifact(model, "onnx_model")
    versions = [tracking.register_version(name, f"runs:/{rid}/onnx_model", rid) for _ in range(5)]
    assert versions == [1, 2, 3, 4, 5]
    tracking.apply_decision(name, 1, Decision(True, "the first champion", {}))

    go = tmp_path / "go"
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_on_postgres}
    racers = [
        subprocess.Popen(
            [sys.executable, str(script), name, str(v), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for v in versions[1:]
    ]
    try:
        for r in racers:
            assert r.stdout.readline().strip() == "ready", r.stderr.read()[-3000:]
        go.touch()  # all four at once
        outs = [r.communicate(timeout=120) for r in racers]
        assert [r.returncode for r in racers] == [0, 0, 0, 0], [err[-2000:] for _, err in outs]
        tries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    finally:
        for r in racers:
            if r.poll() is None:
                r.kill()
    assert all(t[-1] == "promoted" for t in tries), tries
    assert sum(len(t) for t in tries) > 4, "no racer ever lost a race: the test proved nothing"

    info = {v.version: v for v in tracking.list_versions(name)}
    aliases = _aliases(name)
    assert sum("champion" in v.aliases for v in info.values()) == 1
    champion = aliases["champion"]
    # the chain: each champion replaced the one it was decided against; following it from the champion
    # visits every promoted version once and ends at the first champion
    replaced = {v: int(i.tags["promotion.replaced"]) for v, i in info.items() if v != 1}
    decided_against = {v: int(i.tags["promotion.champion_version"]) for v, i in info.items() if v != 1}
    assert replaced == decided_against
    assert aliases["previous"] == replaced[champion]
    chain, v = [champion], champion
    while v != 1:
        v = replaced[v]
        chain.append(v)
    assert sorted(chain) == [1, 2, 3, 4, 5], chain
    # a lost race is said on the version until it wins; nothing is left locked
    assert tracking.rollback(name).version == aliases["previous"]
    from mlflow import MlflowClient

    assert not MlflowClient().search_registered_models(f"name = '{name}{tracking.ALIAS_LOCK_SUFFIX}'")
