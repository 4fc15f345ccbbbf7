"""The monitor's state on disk (reports/NAME/monitoring/state.json): the last evaluation and the retrain
triggers, kept so the cooldown holds across processes."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from ..catalog import monitoring_dir
from ..config import Settings
from ..files import write_json
from .report import MonitorReport
from .verdict import _iso

log = logging.getLogger(__name__)


MAX_TRIGGERS_KEPT = 50


def state_path(settings: Settings) -> Path:
    return monitoring_dir(settings) / "state.json"


def read_state(settings: Settings) -> dict:
    p = state_path(settings)
    return json.loads(p.read_text()) if p.is_file() else {}


def record_trigger(
    settings: Settings,
    report: MonitorReport,
    flow_run: dict,
    now: datetime | None = None,
    log_to_mlflow: bool = True,
) -> dict:
    """A retrain was started (flow_run: id, name, deployment): the cooldown starts now; kept in state.json
    and on the monitoring run."""
    now = now or datetime.now(UTC)
    trig = {
        "at": _iso(now),
        "reason": report.verdict.reason,
        "breaches": report.verdict.breaches,
        "champion_version": report.version,
        "evaluation": report.evaluation,
        **flow_run,
    }
    state = read_state(settings)
    state["last_trigger"] = trig
    state["triggers"] = (state.get("triggers") or [])[-(MAX_TRIGGERS_KEPT - 1) :] + [trig]
    state.pop("last_trigger_error", None)
    write_json(state_path(settings), state)
    if log_to_mlflow and report.run_id:
        from ..registry import tracking

        tracking.log_monitoring(
            report.run_id,
            {"retrain_triggered": 1},
            step=report.evaluation,
            timestamp_ms=int(now.timestamp() * 1000),
            tags={
                "trigger.at": trig["at"],
                "trigger.reason": trig["reason"][:4000],
                "trigger.flow_run_id": flow_run.get("flow_run_id", ""),
                "trigger.flow_run_name": flow_run.get("flow_run_name", ""),
                "trigger.deployment": flow_run.get("deployment", ""),
                "trigger.count": len(state["triggers"]),
            },
        )
    return trig


def record_trigger_error(settings: Settings, report: MonitorReport, error: str, now: datetime | None = None) -> None:
    """A retrain was due but could not be started (no such deployment, no server): said in state.json; no
    cooldown starts, so the next evaluation tries again."""
    state = read_state(settings)
    state["last_trigger_error"] = {
        "at": _iso(now or datetime.now(UTC)),
        "reason": report.verdict.reason,
        "error": error,
    }
    write_json(state_path(settings), state)


def unchecked_trigger(settings: Settings) -> str | None:
    """The flow run id of the last retrain the monitor started, unless it is already known to have crashed:
    the run whose end the flows look up before an evaluation (pipeline/ does not ask Prefect)."""
    trig = read_state(settings).get("last_trigger") or {}
    return None if trig.get("crashed") else trig.get("flow_run_id") or None


def record_trigger_crashed(
    settings: Settings, flow_run_id: str, state_message: str, now: datetime | None = None
) -> dict | None:
    """The last trigger's retrain run crashed (its process was killed before it finished): its cooldown is
    lifted (verdict.cooldown), kept in state.json as `crashed` on the trigger. Returns the trigger, None when
    the last trigger is another run's."""
    state = read_state(settings)
    trig = state.get("last_trigger") or {}
    if trig.get("flow_run_id") != flow_run_id:
        return None
    trig["crashed"] = {"at": _iso(now or datetime.now(UTC)), "state_message": state_message}
    for t in state.get("triggers") or []:
        if t.get("flow_run_id") == flow_run_id:
            t["crashed"] = trig["crashed"]
    write_json(state_path(settings), state)
    return trig
