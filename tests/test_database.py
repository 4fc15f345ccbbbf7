"""Data that lives in a database: `cellcast ingest --query` on the real PostgreSQL the tests start, the URL from the
environment only, the scheduled refresh's ingest fetching the rows after the last timestamp it holds, the snapshot
versioned by DVC like a user's file."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from test_data_versions import cellcast, repo  # noqa: F401  (the fixture: a fresh DVC copy of the repository)
from test_dvc import dvc

from cellcast.pipeline.data.versioning import data_hash, read_lock, read_sources, status

pytestmark = pytest.mark.integration
SECRET = "s3cret-Pw"  # PostgreSQL trusts loopback here: the password is only there to be kept out of every file


def _sql(url: str, sql: str, rows=None) -> None:
    import psycopg2

    conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with conn, conn.cursor() as cur:
            if rows is None:
                cur.execute(sql)
            else:
                cur.executemany(sql, rows)
    finally:
        conn.close()


def _rows(start: int, stop: int) -> list[tuple]:
    t = pd.date_range("2024-01-01", periods=stop, freq="h")[start:]
    y = 10 + 3 * np.sin(np.arange(start, stop) * 2 * np.pi / 24)
    return [(ts.to_pydatetime(), float(v)) for ts, v in zip(t, y, strict=True)]


def test_query_ingest_refresh_and_versioning(repo, postgres_url, monkeypatch, prefect_api):  # noqa: F811  (repo: the fixture imported above)
    from cellcast.flows.data import data_flow, ingest_task
    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.data import versioning

    _sql(postgres_url, "DROP TABLE IF EXISTS meter; CREATE TABLE meter (read_at timestamp, kwh double precision)")
    _sql(postgres_url, "INSERT INTO meter VALUES (%s, %s)", _rows(0, 1440))
    url = postgres_url.replace("://cellcast@", f"://cellcast:{SECRET}@")
    monkeypatch.setenv("CELLCAST_DB_URL", url)
    query = "SELECT read_at, kwh FROM meter"

    out = cellcast(repo, "ingest", "--query", query, "--name", "meter", "--time-col", "read_at", "--target", "kwh")
    assert "data/meter/raw.parquet: 1440 rows" in out and SECRET not in out
    q = json.loads((repo / "data/meter/query.json").read_text())
    assert q["sql"] == query and q["env"] == "CELLCAST_DB_URL" and q["fetched"] == 1440 and q["after"] is None
    # versioned like a file: the snapshot of the query is the ingest stage's source
    assert read_sources(repo)["meter"]["source"] == "data/meter/query.parquet"
    snap = repo / "data/meter/query.parquet"
    assert read_lock(repo)["ingest@meter"]["deps"][0]["md5"] == data_hash(snap)
    assert status(["ingest@meter"], repo) == {}

    # new rows land in the table; the scheduled refresh's ingest fetches only those after the last timestamp held
    _sql(postgres_url, "INSERT INTO meter VALUES (%s, %s)", _rows(1440, 1540))
    settings = load_params(repo / "params.yaml").for_dataset("meter")
    res = ingest_task.fn(settings)
    assert res.meta.rows == 1540 and res.meta.end == "2024-03-05 03:00:00"
    q = json.loads((repo / "data/meter/query.json").read_text())
    assert q["fetched"] == 100 and q["after"] == "2024-02-29 23:00:00" and q["rows"] == 1540
    assert "ingest@meter" in status(["ingest@meter"], repo)  # the snapshot changed: DVC names it
    assert versioning.commit("meter", ["ingest"], repo) == ["ingest@meter"]
    assert status(["ingest@meter"], repo) == {}

    # the data flow a schedule runs: the query again for the newer rows, a new data version recorded like a file's
    _sql(postgres_url, "INSERT INTO meter VALUES (%s, %s)", _rows(1540, 1600))
    ws = data_flow("meter", settings)
    assert ws.meta.rows == 1600 and json.loads((repo / "data/meter/query.json").read_text())["fetched"] == 60
    assert status(["window@meter"], repo) == {}  # ingest, validate and window recorded in dvc.lock
    for f in ("data/meter/query.parquet", "data/meter/validated.parquet"):  # in the cache and on the remote
        md5 = data_hash(repo / f)
        for store in (repo / ".dvc" / "cache", repo / "dvc-storage"):
            assert (store / "files" / "md5" / md5[:2] / md5[2:]).read_bytes() == (repo / f).read_bytes(), (f, store)
    assert ws.meta.data_md5 == data_hash(repo / "data/meter/validated.parquet")
    # `dvc repro` rebuilds the dataset from the versioned snapshot, with no database at all
    monkeypatch.delenv("CELLCAST_DB_URL")
    raw = (repo / "data/meter/raw.parquet").read_bytes()
    shutil.copy(repo / "data/meter/raw.parquet", repo / "raw.before")
    dvc(repo, "repro", "-f", "ingest@meter")
    assert pd.read_parquet(repo / "data/meter/raw.parquet").equals(pd.read_parquet(repo / "raw.before")) and raw

    # the URL's password is nowhere: not in params, sources, lock, metadata, snapshot or logs
    found = subprocess.run(
        ["grep", "-rl", "--exclude-dir=tests", SECRET, "."], cwd=repo, capture_output=True, text=True
    ).stdout.split()
    assert found == []


def test_query_errors_are_one_line(repo, postgres_url, monkeypatch):  # noqa: F811  (repo: the fixture imported above)
    from typer.testing import CliRunner

    from cellcast.cli import app

    args = ["ingest", "--query", "SELECT * FROM nowhere", "--name", "q", "--time-col", "t", "--target", "y"]
    monkeypatch.delenv("CELLCAST_DB_URL", raising=False)
    r = CliRunner().invoke(app, args)
    assert (
        r.exit_code == 2 and r.output.startswith("error: $CELLCAST_DB_URL: not set") and len(r.output.splitlines()) == 1
    )
    monkeypatch.setenv("CELLCAST_DB_URL", postgres_url.replace("://cellcast@", f"://cellcast:{SECRET}@"))
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "failed" in r.output and '"nowhere" does not exist' in r.output, r.output
    assert SECRET not in r.output and "***" in r.output and len(r.output.strip().splitlines()) == 1
