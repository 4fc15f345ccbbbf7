"""One loaded version's forecast of a parsed request, in each series' own scale, and the live log's record of it."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from .livelog import Answer
from .models import ServedModel
from .problems import BadRequest
from .requests import Parsed, unscale
from .swap import Loaded


def predict(cur: Loaded, parsed: Parsed, single: bool) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The forecast of a parsed request, in each series' own scale; a non-finite answer is a 422."""
    y, q, used = cur.engine.predict_all(parsed.batch, parsed.future)
    if parsed.scales is not None:  # a panel model answers in each series' scale
        y = unscale(cur.engine, y, *parsed.scales)
        q = None if q is None else unscale(cur.engine, q, *parsed.scales)
    if not np.isfinite(y).all():
        # finite inputs far outside what the model saw can overflow inside it; JSON has no NaN
        bad = sorted({i for i in range(len(y)) if not np.isfinite(y[i]).all()})
        raise BadRequest(
            422,
            f"{'body' if single else f'instances[{bad[0]}]'}: the model's forecast is not finite "
            f"for these values (far outside its training data?); {len(bad)} such series",
        )
    return y, q, used


def live_answer(m: ServedModel, cur: Loaded, role: str, served: bool, request_id: str, parsed: Parsed, y, q) -> Answer:
    e = cur.engine
    return Answer(
        request_id=request_id,
        logged_at=datetime.now(UTC),
        model=m.name,
        dataset=m.dataset,
        version=cur.version,
        role=role,
        served=served,
        y=y,
        q=q,
        targets=tuple(e.targets),
        levels=tuple(e.quantiles or ()) if q is not None else (),
        stamps=parsed.stamps,
        origins=parsed.origins or [None] * len(y),
        ids=parsed.ids,
    )
