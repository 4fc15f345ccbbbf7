"""The models one service serves: each dataset's version under its alias (and, with shadow or canary, the
challenger beside it) in a `swap.ModelHolder`, loaded now or on the first request, and one poller thread that follows
their aliases."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from ..config import Settings
from .metrics import ServiceMetrics
from .problems import BadRequest
from .swap import Loaded, ModelHolder, ModelSource, registry_source

log = logging.getLogger(__name__)

CHALLENGER = "challenger"  # the registry's alias of a version waiting for promotion (registry/tracking)


@dataclass
class ServedModel:
    """One served dataset: the version under the followed alias and, with shadow or canary on, the challenger."""

    dataset: str
    name: str  # the registered model
    alias: str  # the alias followed (the role of its answers)
    settings: Settings
    holder: ModelHolder
    challenger: ModelHolder | None  # None: neither shadow nor canary is on for this model
    wanted: bool  # loaded, or asked for since (lazy loading): the poller follows its aliases

    def load(self) -> Loaded:
        """The followed version, loaded now if it is not yet (a lazy model's first request); the challenger with
        it. Runs in a worker thread: a load takes a second."""
        self.wanted = True
        cur = self.holder.ensure_loaded()
        if self.challenger is not None and self.challenger.last_check is None:
            self.challenger.refresh()
        return cur

    def challenger_now(self, cur: Loaded) -> Loaded | None:
        """The challenger to compare with `cur`: None when there is none, or it is the same version."""
        ch = self.challenger.current if self.challenger is not None else None
        return None if ch is None or ch.version == cur.version else ch


def load_models(
    every: list[Settings],
    source: ModelSource | None,
    sources: Mapping[str, Mapping[str, ModelSource]],
    alias: str,
    metrics: ServiceMetrics,
    engine: dict,
) -> dict[str, ServedModel]:
    """Each dataset's model following `alias` (and its challenger when it is shadowed or a canary), by dataset; loaded
    now unless the service loads lazily (serve.load: lazy, several models)."""
    lazy = len(every) > 1 and every[0].serve.load == "lazy"

    def hold(src: ModelSource, name: str, role: str, optional: bool = False) -> ModelHolder:
        h = ModelHolder(src, **engine, optional=optional)
        h.listeners.append(lambda h: metrics.model_changed(h, name, role))
        return h

    models: dict[str, ServedModel] = {}
    for s in every:
        own = sources.get(s.dataset, {})
        followed = source or own.get(alias) or registry_source(s, alias)
        holder = hold(followed, s.model_name, alias)
        challenger = None
        if (s.serve.shadow or s.serve.canary > 0) and alias != CHALLENGER:
            challenger = hold(own.get(CHALLENGER) or registry_source(s, CHALLENGER), s.model_name, CHALLENGER, True)
        m = ServedModel(s.dataset, s.model_name, alias, s, holder, challenger, wanted=not lazy)
        if not lazy:
            holder.refresh(raise_errors=True)
            if challenger is not None:
                challenger.refresh()
        models[s.dataset] = m
    return models


async def loaded(m: ServedModel) -> Loaded:
    cur = m.holder.current
    if cur is not None:
        return cur
    try:
        return await run_in_threadpool(m.load)
    except Exception as e:
        raise BadRequest(503, f"model '{m.dataset}': no version loaded: {str(e).splitlines()[0][:300]}") from None


def poll(models: list[ServedModel], stop: threading.Event, every_s: float) -> None:
    """One thread follows every model's aliases: those loaded or asked for (a lazy model nobody asked for is not)."""
    while not stop.wait(every_s):
        for m in models:
            for holder in (m.holder, m.challenger):
                if holder is None or not m.wanted:
                    continue
                try:
                    holder.refresh()
                except Exception:  # the poller must outlive any surprise; the error is in last_error/log
                    log.exception("model poll failed")
