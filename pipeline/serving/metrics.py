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
    cellcast_model_memory_bytes{name, version, alias, kind}   per loaded model: kind=onnx_file (the file's size),
                                                      rss_delta (the process's resident memory after its load
                                                      minus before: session, weights, arenas; approximate)
    cellcast_forecasts_total{name, version, role, served}   answers computed, by version and the alias it was
                                                      loaded through; served=false: shadow answers nobody saw
    cellcast_shadow_dropped_total{name}               shadow forecasts dropped: the queue was full
    cellcast_shadow_failed_total{name}                shadow forecasts that failed (the challenger refused the
                                                      request or its forecast was not finite)
    cellcast_canary_fallbacks_total{name, version}    canary requests the challenger (that version) could not read
                                                      (other variables, lookback, ...) but the champion could: it
                                                      answered them
    cellcast_live_log_rows_total{dataset}             rows written to the live log
    cellcast_live_log_dropped_rows_total              rows dropped: the writer fell behind or a write failed

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
        self._request_metrics(reg)
        self._model_metrics(reg)
        self._answer_metrics(reg)
        # per (name, alias) followed: the labels set last, and the holder counts already added
        self._model_labels: dict[tuple[str, str], tuple[str, ...]] = {}
        self._memory_labels: dict[tuple[str, str], list[tuple[str, ...]]] = {}
        self._error_labels: tuple[str, ...] | None = None
        self._swaps_seen: dict[int, int] = {}
        self._failures_seen: dict[int, int] = {}

    def _request_metrics(self, reg: CollectorRegistry) -> None:
        """The HTTP side: requests answered, their latency, those in flight."""
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

    def _model_metrics(self, reg: CollectorRegistry) -> None:
        """The models loaded: which version serves, its swaps and their failures, its memory."""
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
        self.memory = Gauge(
            "cellcast_model_memory_bytes",
            "memory of each loaded model: kind=onnx_file (its file's size), rss_delta (resident memory after its "
            "load minus before, approximate)",
            ["name", "version", "alias", "kind"],
            registry=reg,
            multiprocess_mode="liveall",
        )

    def _answer_metrics(self, reg: CollectorRegistry) -> None:
        """The answers: forecasts by version and role, the shadow's and the canary's mishaps, the live log."""
        self.forecasts = Counter(
            "cellcast_forecasts",
            "forecast answers computed, by model version and role (the alias it was loaded through); served=false: "
            "shadow answers nobody saw",
            ["name", "version", "role", "served"],
            registry=reg,
        )
        self.shadow_dropped = Counter(
            "cellcast_shadow_dropped", "shadow forecasts dropped because the queue was full", ["name"], registry=reg
        )
        self.shadow_failed = Counter(
            "cellcast_shadow_failed",
            "shadow forecasts that failed (the challenger refused the request, or its forecast was not finite)",
            ["name"],
            registry=reg,
        )
        self.canary_fallbacks = Counter(
            "cellcast_canary_fallbacks",
            "requests picked for the canary that the challenger could not read (other variables, lookback, ...) and "
            "the champion answered instead; version: the challenger's",
            ["name", "version"],
            registry=reg,
        )
        self.live_rows = Counter(
            "cellcast_live_log_rows", "rows written to the live forecast log", ["dataset"], registry=reg
        )
        self.live_dropped = Counter(
            "cellcast_live_log_dropped_rows",
            "live log rows dropped: the writer fell behind or a write failed",
            registry=reg,
        )

    # ------------------------------------------------------------ the model

    def model_changed(self, holder, name: str, alias: str) -> None:
        """Bring the model gauges up to the holder's state (after each refresh: a swap, a failure, nothing)."""
        cur = holder.current
        key = (name, alias)
        labels = None
        if cur is not None:
            labels = (str(getattr(cur.info, "name", None) or name), cur.version, alias, cur.engine.provider)
        if labels != self._model_labels.get(key):
            if key in self._model_labels:
                self.model.labels(*self._model_labels.pop(key)).set(0)
            for old in self._memory_labels.pop(key, []):
                self.memory.remove(*old)
            if labels is not None:
                self.model.labels(*labels).set(1)
                self._model_labels[key] = labels
                mem: list[tuple[str, ...]] = [(labels[0], cur.version, alias, "onnx_file")]
                self.memory.labels(*mem[0]).set(cur.file_bytes)
                if cur.rss_delta_bytes is not None:
                    mem.append((labels[0], cur.version, alias, "rss_delta"))
                    self.memory.labels(*mem[1]).set(cur.rss_delta_bytes)
                self._memory_labels[key] = mem
        seen = self._swaps_seen.get(id(holder), 0)
        if holder.swaps > seen:
            self.swaps.inc(holder.swaps - seen)
            self._swaps_seen[id(holder)] = holder.swaps
        seen = self._failures_seen.get(id(holder), 0)
        if holder.failures > seen:
            self.swap_failures.inc(holder.failures - seen)
            self._failures_seen[id(holder)] = holder.failures
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
            path = scope["path"] if scope["path"] in paths else route_label(scope["path"])
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


def route_label(path: str) -> str:
    """The path label of a request outside the fixed routes: a model's route by its template (one label for
    every model name), anything else "other" (a scanner cannot grow the label set)."""
    if path.startswith("/v1/models/"):
        rest = path[len("/v1/models/") :]
        if "/" not in rest:
            return "/v1/models/{name}"
        if rest.count("/") == 1 and rest.endswith("/forecast"):
            return "/v1/models/{name}/forecast"
    return "other"


def worker_exited(pid: int) -> None:
    """For gunicorn's `child_exit` hook: drop a dead worker's live gauges from the shared folder."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
