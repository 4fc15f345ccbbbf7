"""Which model version serves, and the swap to a new one.

A `ModelSource` is any callable returning (onnx_path, version_info); the default asks the registry for
`NAME-forecaster@ALIAS`. `ModelHolder.poll` calls it every `poll_seconds`; a new version is loaded and
smoke-tested completely before one reference is swapped, so every request sees either the old model or
the new one, never a mix, and a version that fails to load is reported (`last_error`, a log line) while
the old one keeps serving. Only ONNX files are loaded (no pickles). An optional holder (the `challenger`
alias) holds nothing while its source finds no version (NotFoundError: the alias is absent), and drops
what it held when the alias goes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import Settings
from ..engine.inference import OnnxForecaster
from ..errors import NotFoundError

log = logging.getLogger(__name__)

ModelSource = Callable[[], tuple[Path, Any]]


def registry_source(settings: Settings, alias: str = "champion") -> ModelSource:
    """The default source: the registry's `alias` of this dataset's model, downloaded as ONNX."""

    def source() -> tuple[Path, Any]:
        from ..registry import tracking  # imported on first use: mlflow costs seconds to import

        return tracking.download_model(settings.model_name, alias)

    return source


def rss_bytes() -> int | None:
    """This process's resident memory now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _version_of(info: Any) -> str:
    return str(getattr(info, "version", info))


def _batch1_seconds(engine: OnnxForecaster, runs: int = 5) -> float:
    """The median time of a one-series forecast, after one warm-up."""
    x, f = engine.synthetic_input(1), engine.synthetic_future(1)  # f: None for a model without future inputs
    engine.predict(x, f)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        engine.predict(x, f)
        times.append(time.perf_counter() - t0)
    return sorted(times)[runs // 2]


@dataclass(frozen=True)
class Loaded:
    """One loaded model version; immutable, replaced as a whole on a swap."""

    engine: OnnxForecaster
    info: Any
    version: str
    path: Path
    loaded_at: datetime
    batch1_s: float = 0.0  # a one-series forecast's time, measured at load (the service decides where to run it)
    file_bytes: int = 0  # the ONNX file's size
    # the process's resident memory after the load minus before it (session, weights, the smoke forecasts);
    # approximate: another load or a request in another thread at the same time counts in it too
    rss_delta_bytes: int | None = None


@dataclass
class ModelHolder:
    """The model that serves, and the poller that replaces it when the source names a new version."""

    source: ModelSource
    device: str = "auto"
    threads: int | None = None
    cpu_batch_threshold: int | None = None
    require_gpu: bool = False
    optional: bool = False  # an absent version (the source raises NotFoundError) is no error: nothing is held
    current: Loaded | None = None
    last_error: str | None = None
    failed_version: str | None = None  # the version last_error is about (None: the source itself failed)
    last_check: datetime | None = None
    swaps: int = 0
    failures: int = 0  # refreshes that failed (a version not swapped in, or the source itself)
    # called after every refresh, with the holder (the service's metrics follow it this way)
    listeners: list[Callable[[ModelHolder], None]] = field(default_factory=list)
    _failed: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _first_load: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self, raise_errors: bool = False) -> bool:
        """Ask the source; load, smoke-test and swap in a new version. True when a swap happened."""
        try:
            return self._refresh(raise_errors)
        finally:
            for listener in self.listeners:
                try:
                    listener(self)
                except Exception:  # a listener's bug must not stop the poller or a swap
                    log.exception("model listener failed")

    def ensure_loaded(self) -> Loaded:
        """The model, loaded now when nothing is yet (lazy loading: concurrent first requests load it once);
        a failure raises."""
        cur = self.current
        if cur is not None:
            return cur
        with self._first_load:
            if self.current is None:
                self.refresh(raise_errors=True)
            if self.current is None:  # an optional holder whose source has no version
                raise NotFoundError(self.last_error or "no version to load")
            return self.current

    def _refresh(self, raise_errors: bool) -> bool:
        with self._lock:  # one refresh at a time; requests never take this lock
            self.last_check = datetime.now(UTC)
            version = None
            cur = self.current
            try:
                try:
                    path, info = self.source()
                except NotFoundError:
                    if not self.optional:
                        raise
                    if cur is not None:
                        log.info("version %s unloaded: its alias is gone", cur.version)
                    self.current, self.last_error, self._failed = None, None, None
                    return cur is not None
                version = _version_of(info)
                if cur is not None and cur.version == version and cur.path == Path(path):
                    return False
                if version == self._failed and not raise_errors:
                    return False  # reported already; retried when the source names another version
                rss0 = rss_bytes()
                engine = OnnxForecaster.from_path(
                    path,
                    device=self.device,
                    threads=self.threads,
                    cpu_batch_threshold=self.cpu_batch_threshold,
                    require_gpu=self.require_gpu,
                )
                engine.smoke_test()
                batch1_s = _batch1_seconds(engine)
                rss1 = rss_bytes()
            except Exception as e:
                what = f"version {version}" if version is not None else "model source"
                self.last_error = f"{datetime.now(UTC).isoformat(timespec='seconds')}: {what}: {e}"
                self.failed_version = version
                self.failures += 1
                if version is not None:
                    self._failed = version
                if raise_errors:
                    raise
                log.error(
                    "not swapped in, %s keeps serving: %s",
                    f"version {cur.version}" if cur else "nothing",
                    self.last_error,
                )
                return False
            old = self.current
            delta = None if rss0 is None or rss1 is None else rss1 - rss0
            loaded = Loaded(
                engine, info, version, Path(path), engine.loaded_at, batch1_s, Path(path).stat().st_size, delta
            )
            self.current = loaded  # the atomic swap
            self.swaps += int(old is not None)
            self._failed = None
            log.info(
                "serving version %s (%s) on %s%s",
                version,
                path,
                engine.provider,
                f", replacing version {old.version}" if old else "",
            )
            return True

    def poll(self, stop: threading.Event, every_s: float) -> None:
        while not stop.wait(every_s):
            try:
                self.refresh()
            except Exception:  # the poller must outlive any surprise; the error is in last_error/log
                log.exception("model poll failed")
