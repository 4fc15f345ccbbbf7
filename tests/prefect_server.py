"""Start a real `prefect server` on 127.0.0.1 for tests (its own PREFECT_HOME and sqlite database)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services import background_service, free_port


def prefect_env(home: Path, api_url: str | None = None) -> dict:
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


@contextmanager
def prefect_server(workdir: Path, startup_timeout: float = 180, ui: bool = False) -> Iterator[str]:
    """Yield the API URL (http://127.0.0.1:PORT/api); the server is stopped afterwards.
    ui: serve the web UI too (at http://127.0.0.1:PORT), told its API's address (it would call :4200)."""
    workdir = Path(workdir)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    exe = Path(sys.executable).with_name("prefect")
    env = {**os.environ, **prefect_env(workdir / "home")}
    env.pop("PREFECT_API_URL", None)
    if ui:
        env.update(PREFECT_UI_ENABLED="true", PREFECT_UI_API_URL=api, PREFECT_SERVER_UI_API_URL=api)
    cmd = [str(exe), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with background_service("prefect server", cmd, f"{api}/health", workdir, env, startup_timeout, stop_timeout=30):
        yield api
