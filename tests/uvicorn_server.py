"""A real uvicorn server on 127.0.0.1 in a background thread, for the service tests."""

from __future__ import annotations

import threading
import time

from fastapi import FastAPI


class ServerThread:
    """A real uvicorn server on 127.0.0.1 in a background thread (tests, benchmarks); port 0 = a free one."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, name="cellcast-uvicorn", daemon=True)
        self.host = host

    def __enter__(self) -> ServerThread:
        from tiers import require_integration

        require_integration("a uvicorn server")
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
