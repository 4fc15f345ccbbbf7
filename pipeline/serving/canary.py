"""The challenger beside the followed version (serve.shadow, serve.canary): canary's stable-hash share of requests
answered by the challenger, and the shadow worker that answers requests again off their path."""

from __future__ import annotations

import hashlib
import logging
import queue
import threading

from .livelog import LiveLog
from .metrics import ServiceMetrics
from .models import ServedModel
from .predict import live_answer, predict
from .problems import BadRequest
from .requests import Parsed, parse_body
from .swap import Loaded

log = logging.getLogger(__name__)


def canary_share(key: bytes, model: str) -> float:
    """A request's place in [0, 1): a stable hash of its key (the X-Cellcast-Key header, else the body) and the
    model, so a client that sends the same key always meets the same version."""
    digest = hashlib.sha256(model.encode() + b"\0" + key).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


KEY_HEADER = "x-cellcast-key"


def route(
    m: ServedModel, cur: Loaded, ch: Loaded | None, body: bytes, key: str | None, metrics: ServiceMetrics
) -> tuple[Parsed, str, Loaded]:
    """The version that answers a request and the request parsed for it, with the role of its answer: the
    challenger for canary's share of keys (`key`: the X-Cellcast-Key header, else the body decides), else `cur`."""
    role, use = m.alias, cur
    canary = m.settings.serve.canary
    parsed, refused_by = None, None  # refused_by: a canary challenger that could not read the request
    if ch is not None and canary > 0:
        if canary_share(key.encode() if key is not None else body, m.name) < canary:
            try:
                parsed, role, use = parse_body(body, ch.engine), "challenger", ch
            except BadRequest:  # a challenger with another interface: this request stays with the champion
                refused_by = ch
    if parsed is None:
        parsed = parse_body(body, cur.engine)
        if refused_by is not None:  # counted once the champion reads it: a request neither reads is only a refusal
            metrics.canary_fallbacks.labels(m.name, refused_by.version).inc()
    return parsed, role, use


class Shadow:
    """The challenger's answers to requests already answered: one worker thread and a bounded queue, so a shadow
    forecast never delays a response; a full queue drops the job and counts it."""

    def __init__(self, metrics: ServiceMetrics, live: LiveLog | None, size: int):
        self.metrics, self.live = metrics, live
        self.jobs: queue.Queue = queue.Queue(maxsize=size)
        self.thread = threading.Thread(target=self._run, name="cellcast-shadow", daemon=True)
        self.thread.start()

    def submit(self, m: ServedModel, ch: Loaded, body: bytes, request_id: str) -> None:
        try:
            self.jobs.put_nowait((m, ch, body, request_id))
        except queue.Full:
            self.metrics.shadow_dropped.labels(m.name).inc()

    def close(self) -> None:
        """Answer what is queued, then stop."""
        self.jobs.put(None)
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            m, ch, body, request_id = job
            try:
                parsed = parse_body(body, ch.engine)
                y, q, _ = predict(ch, parsed, parsed.single)
            except Exception as e:  # the challenger refused what the champion answered: counted, not raised
                self.metrics.shadow_failed.labels(m.name).inc()
                log.debug("shadow forecast of %s v%s failed: %s", m.name, ch.version, e)
                continue
            try:
                self.metrics.forecasts.labels(m.name, ch.version, "challenger", "false").inc()
                if self.live is not None and m.settings.serve.live_log:
                    self.live.add(live_answer(m, ch, "challenger", False, request_id, parsed, y, q))
            except Exception:  # the worker must outlive a surprise (close() waits for it to drain the queue)
                log.exception("shadow answer of %s v%s not recorded", m.name, ch.version)
