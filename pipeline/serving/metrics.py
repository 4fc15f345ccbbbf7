"""The forecasting service's Prometheus metrics (GET /metrics): the one module that imports prometheus_client.

    cellcast_requests_total{path, method, status}     requests answered
    cellcast_request_duration_seconds{path}           latency histogram (server side: first byte in to last byte out)
    cellcast_requests_in_flight                       requests being answered now
    cellcast_model_info{name, version, alias, provider}   1 for the version serving (0 for one it replaced)
    cellcast_model_swaps_total                        hot swaps to a new version
    cellcast_model_swap_failures_total                failed refreshes: a version that did not load or pass its smoke
                                                      forecast (reported once), or the source (registry) failing
    cellcast_model_last_swap_error_timestamp_seconds  when the last one failed (0: never)
    cellcast_model_last_swap_error{version, error}    1 for the last failure, its version and first line

One process: each app has its own registry. Several worker processes behind one port (uvicorn --workers,
gunicorn): set PROMETHEUS_MULTIPROC_DIR to an empty folder before they start; each worker then writes its
values there and /metrics, whichever worker answers, reads them all (the model gauges carry a `pid` label:
each worker polls the alias on its own and may serve another version for up to poll_seconds).
"""

from __future__ import annotations

import os
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# where a forecast's time goes on CPU: ~1 ms for a small model, tens of ms for a large batch
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The service's metrics; `middleware(app)` counts every request, `model_changed` follows the holder."""

    def __init__(self, paths: set[str]):
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = reg = CollectorRegistry()
        self.paths = frozenset(paths)  # other paths count as "other": a scanner cannot grow the label set
        self.requests = Counter(
            "cellcast_requests",
            "HTTP requests answered, by path, method and status",
            ["path", "method", "status"],
            registry=reg,
        )
        self.latency = Histogram(
            "cellcast_request_duration_seconds",
            "time to answer a request, by path",
            ["path"],
            buckets=BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge(
            "cellcast_requests_in_flight", "requests being answered now", registry=reg, multiprocess_mode="livesum"
        )
        self.model = Gauge(
            "cellcast_model_info",
            "1 for the model version that serves (0: replaced), with the ONNX Runtime provider it runs on",
            ["name", "version", "alias", "provider"],
            registry=reg,
            multiprocess_mode="liveall",
        )
        self.swaps = Counter("cellcast_model_swaps", "hot swaps to a new model version", registry=reg)
        self.swap_failures = Counter(
            "cellcast_model_swap_failures",
            "failed refreshes: a version that did not load "
            "or pass its smoke forecast, or the registry failing (the old version kept "
            "serving)",
            registry=reg,
        )
        self.error_time = Gauge(
            "cellcast_model_last_swap_error_timestamp_seconds",
            "when the last swap failed (unix time; 0: never)",
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.error = Gauge(
            "cellcast_model_last_swap_error",
            "1 for the last failed swap: the version and the error's first line",
            ["version", "error"],
            registry=reg,
            multiprocess_mode="liveall",
        )
        self._model_labels: tuple[str, ...] | None = None
        self._error_labels: tuple[str, ...] | None = None
        self._swaps_seen = 0
        self._failures_seen = 0

    # ------------------------------------------------------------ the model

    def model_changed(self, holder, name: str, alias: str) -> None:
        """Bring the model gauges up to the holder's state (after each refresh: a swap, a failure, nothing)."""
        cur = holder.current
        if cur is not None:
            labels = (str(getattr(cur.info, "name", None) or name), cur.version, alias, cur.engine.provider)
            if labels != self._model_labels:
                if self._model_labels is not None:
                    self.model.labels(*self._model_labels).set(0)
                self.model.labels(*labels).set(1)
                self._model_labels = labels
        if holder.swaps > self._swaps_seen:
            self.swaps.inc(holder.swaps - self._swaps_seen)
            self._swaps_seen = holder.swaps
        if holder.failures > self._failures_seen:
            self.swap_failures.inc(holder.failures - self._failures_seen)
            self._failures_seen = holder.failures
            self.error_time.set(time.time())
            failed = (str(holder.failed_version or ""), (holder.last_error or "").splitlines()[0][:300])
            if self._error_labels is not None:
                self.error.labels(*self._error_labels).set(0)
            self.error.labels(*failed).set(1)
            self._error_labels = failed

    # ------------------------------------------------------------ requests

    def middleware(self, app):
        """A plain ASGI wrapper (no per-request objects beyond two closures): counts and times every request."""
        paths, requests, latency, in_flight = self.paths, self.requests, self.latency, self.in_flight
        clock = time.perf_counter

        async def wrapped(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            path = scope["path"] if scope["path"] in paths else "other"
            status = [500]  # an exception before the response started is answered 500 by the server

            async def send_status(message):
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            t0 = clock()
            in_flight.inc()
            try:
                await app(scope, receive, send_status)
            finally:
                in_flight.dec()
                latency.labels(path).observe(clock() - t0)
                requests.labels(path, scope["method"], str(status[0])).inc()

        return wrapped

    # ------------------------------------------------------------ exposition

    def exposition(self) -> tuple[bytes, str]:
        """The text format: this app's registry, or every worker's values in multiprocess mode."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg)
            return generate_latest(reg), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """For gunicorn's `child_exit` hook: drop a dead worker's live gauges from the shared folder."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
