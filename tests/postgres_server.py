"""A throwaway PostgreSQL cluster for tests: Debian's server binaries, initdb into a fresh folder, the server on
127.0.0.1 and a free port, removed afterwards. PostgreSQL refuses to run as root: as root the cluster belongs to
an unprivileged user (`nobody`)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    from services import free_port
except ImportError:  # imported as tests.postgres_server
    from tests.services import free_port

REQUIRE_ENV = "CELLCAST_REQUIRE_SERVICES"  # .ci/run sets it: a missing server there is a failure, not a skip


def postgres_bin() -> Path | None:
    """The folder of Debian's (or $PG_BIN's) initdb and postgres, newest version first."""
    candidates = [os.environ.get("PG_BIN", "")] + sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in filter(None, candidates):
        if (Path(c) / "initdb").is_file() and (Path(c) / "postgres").is_file():
            return Path(c)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_user() -> dict:
    """Popen arguments that run a command as the cluster's owner: nobody when we are root, else ourselves."""
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam("nobody")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


@contextmanager
def postgres_server(database: str = "mlflow", startup_timeout: float = 60) -> Iterator[str]:
    """Yield a SQLAlchemy URL, postgresql+psycopg2://cellcast@127.0.0.1:PORT/DATABASE (trust authentication
    on loopback; SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3); stopped and removed afterwards."""
    import psycopg2
    from tiers import require_integration

    require_integration("a PostgreSQL server")
    bindir = postgres_bin()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BIN)")
    as_user = _as_user()
    # under /tmp, not pytest's tmp_path: nobody must be able to reach it
    root = Path(tempfile.mkdtemp(prefix="cellcast-pg-"))
    data = root / "data"
    data.mkdir()
    if as_user:
        for p in (root, data):
            os.chown(p, as_user["user"], as_user["group"])
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C", "LC_ALL": "C"}
    subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "cellcast",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        env=env,
        cwd=root,
        **as_user,
    )
    port = free_port()
    log = open(root / "server.log", "wb")
    # a throwaway cluster: durability off (fsync, full-page writes) for speed
    proc = subprocess.Popen(
        [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "max_connections=200",
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **as_user,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user="cellcast", dbname="postgres")
                break
            except psycopg2.OperationalError as e:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start: {(root / 'server.log').read_text()[-2000:]}") from e
                time.sleep(0.2)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{database}"')
        conn.close()
        yield f"postgresql+psycopg2://cellcast@127.0.0.1:{port}/{database}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # "fast" shutdown: ends sessions, no waiting for clients
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
