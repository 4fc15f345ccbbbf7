"""Data that lives in a database: a query read through SQLAlchemy (the one module that imports it), its rows kept in
a snapshot file that the ingest reads like any Parquet file, so the dataset is versioned like a file's (the
snapshot is its DVC source). A refresh runs the query again for the rows after the last timestamp the snapshot
holds and appends them.

The database URL comes from an environment variable (default CELLCAST_DB_URL) and only its name is recorded
(raw.json, sources.yaml): credentials never reach params.yaml, the metadata or the logs (a message shows the URL
with its password hidden)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ..catalog import dataset_dir
from ..config import Settings, check_dataset_name
from ..errors import ConfigError, IngestError
from ..files import write_json, write_parquet

DEFAULT_ENV = "CELLCAST_DB_URL"
SNAPSHOT = "query.parquet"
QUERY = "query.json"  # the query and the variable holding the URL (never the URL): what a refresh runs again


def snapshot_path(settings: Settings) -> Path:
    """data/NAME/query.parquet: every row the query returned so far (the DVC source of the dataset)."""
    return dataset_dir(settings) / SNAPSHOT


def _url(env: str) -> str:
    url = os.environ.get(env)
    if not url:
        raise ConfigError(
            f"${env}: not set; export the database URL there (e.g. postgresql+psycopg2://user:password@host/db): "
            f"it is read from the environment, never from params.yaml"
        )
    return url


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<the URL in the environment>"


def _first_line(e: BaseException) -> str:
    """The database's own words: the driver's error under SQLAlchemy's and pandas' wrappers, first line."""
    while True:
        inner = getattr(e, "orig", None) or e.__cause__
        if inner is None or inner is e:
            break
        e = inner
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_query(env: str, query: str, time_col: str, after=None) -> pd.DataFrame:
    """The query's rows (all, or those whose `time_col` is later than `after`), ordered by time."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    url = _url(env)
    try:
        engine = create_engine(url)
    except Exception as e:  # an unknown driver, a malformed URL
        raise ConfigError(f"${env}: not a usable database URL ({type(e).__name__})") from None
    try:
        q = engine.dialect.identifier_preparer.quote(time_col)
        sql = f"SELECT * FROM ({query.strip().rstrip(';')}) AS cellcast_q"
        params = {}
        if after is not None:
            sql += f" WHERE cellcast_q.{q} > :after"
            params["after"] = pd.Timestamp(after).to_pydatetime()
        sql += f" ORDER BY cellcast_q.{q}"
        with engine.connect() as conn:
            frame = pd.read_sql(text(sql), conn, params=params)
    except (SQLAlchemyError, pd.errors.DatabaseError) as e:
        first = _first_line(e)
        raise IngestError.broken(
            "query", f"query on {_shown(url)} (${env}) failed: {first.replace(url, _shown(url))}"
        ) from None
    finally:
        engine.dispose()
    if time_col not in frame.columns:
        raise IngestError.broken(
            "missing_column", f"query on ${env}: no column '{time_col}' (columns: {', '.join(frame.columns)})"
        )
    return frame


def ingest_query(
    query: str,
    *,
    time_col: str,
    targets: list[str],
    env: str = DEFAULT_ENV,
    settings: Settings,
    refresh: bool = False,
    **options,
):
    """Run `query` (a SELECT) on the database at $`env` into data/NAME/query.parquet, then ingest that snapshot like a
    Parquet file (options: ingest_file's). refresh: only the rows after the snapshot's last `time_col` are fetched
    and appended (a scheduled refresh); else the snapshot is the query's whole result. Returns IngestResult."""
    from .ingest import ingest_file

    name = settings.dataset
    check_dataset_name(name, "--name")
    snap = snapshot_path(settings)
    before = pd.read_parquet(snap) if refresh and snap.is_file() else None
    after = None
    if before is not None and len(before):
        after = pd.to_datetime(before[time_col]).max()
    rows = read_query(env, query, time_col, after)
    frame = rows if before is None else pd.concat([before, rows], ignore_index=True)
    if not len(frame):
        raise IngestError.broken("empty", f"query on ${env}: returned no rows")
    snap.parent.mkdir(parents=True, exist_ok=True)
    tmp = snap.with_name(f".{SNAPSHOT}.tmp")
    write_parquet(frame, tmp)
    tmp.replace(snap)
    res = ingest_file(snap, time_col=time_col, targets=targets, fmt="parquet", settings=settings, **options)
    # how to run it again: the query and the variable's name, never the URL (beside the snapshot: a DVC stage that
    # re-ingests the snapshot rewrites raw.json, not this)
    write_json(
        dataset_dir(settings) / QUERY,
        {
            "sql": query,
            "env": env,
            "time_col": time_col,
            "targets": list(targets),
            **options,
            "fetched": int(len(rows)),
            "after": None if after is None else str(after),
            "rows": int(len(frame)),
        },
    )
    return res


def query_source(settings: Settings) -> dict | None:
    """How the dataset was read from a database (data/NAME/query.json): ingest_query's arguments, or None."""
    path = dataset_dir(settings) / QUERY
    if not path.is_file():
        return None
    q = json.loads(path.read_text())
    for k in ("fetched", "after", "rows"):
        q.pop(k, None)
    return {"query": q.pop("sql"), **q}
