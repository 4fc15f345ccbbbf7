"""Monitoring in the scheduled forecast flow: score the champion, and start the retrain deployment when the
monitor's verdict says so (pipeline/monitoring/ decides; this module only asks Prefect)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cellcast.pipeline.config import Settings, check_dataset_name

if TYPE_CHECKING:  # imported where it runs: the flow module stays light
    from cellcast.pipeline.monitoring.promote import LivePromotion
    from cellcast.pipeline.monitoring.report import MonitorReport

TRAIN_FLOW = "cellcast-train"
RETRAIN_TAG = "retrain"


def train_deployment_name(name: str) -> str:
    """The deployment that trains dataset `name` on its schedule or on demand (prefect.yaml; flows/deploy.py)."""
    return f"train-{check_dataset_name(name)}"


def retrain_deployment_name(name: str) -> str:
    """The deployment the monitor starts when dataset `name` is due a retrain (no schedule of its own: its runs
    are the triggered ones, apart from the scheduled trainings of train-NAME)."""
    return f"retrain-{check_dataset_name(name)}"


@task(name="monitor", cache_policy=NO_CACHE, retries=0)
def monitor_task(settings: Settings) -> MonitorReport:
    from cellcast.pipeline.monitoring.evaluate import evaluate

    return evaluate(settings)


@task(name="trigger-retrain", cache_policy=NO_CACHE, retries=0)
def trigger_task(settings: Settings, report) -> dict | None:
    """run_deployment of retrain-NAME with the reason as a parameter and tags; the promotion policy decides
    what the retrain registers, as always. No deployment (a forecast run outside the deployed stack): the
    monitor records that it could not start one, and the next evaluation tries again."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    from cellcast.pipeline.monitoring import state as monitor

    name = settings.dataset
    logger = get_run_logger()
    deployment = f"{TRAIN_FLOW}/{retrain_deployment_name(name)}"
    # a panel's breaches are per series ("series 'X': accuracy: ..."): the kind is in each line
    kind = "accuracy" if any("accuracy:" in b for b in report.verdict.breaches) else "drift"
    try:
        run = run_deployment(
            deployment,
            parameters={"reason": report.verdict.reason},
            timeout=0,
            tags=[RETRAIN_TAG, f"trigger:{kind}", f"monitor-step:{report.evaluation}"],
            idempotency_key=f"retrain-{name}-{report.evaluation}",
        )
        assert isinstance(run, FlowRun)  # called from a sync task: the sync implementation answers (no coroutine)
    except ObjectNotFound:
        msg = (
            f"deployment '{deployment}' not found: deploy it (cellcast.flows.deploy {name} --prefect-yaml, then "
            f"`prefect deploy --all`; or cellcast.flows.deploy {name} --work-pool POOL)"
        )
        logger.warning("retrain due (%s) but not started: %s", report.verdict.reason, msg)
        monitor.record_trigger_error(settings, report, msg)
        return None
    trig = monitor.record_trigger(
        settings, report, {"flow_run_id": str(run.id), "flow_run_name": run.name, "deployment": deployment}
    )
    logger.warning("retrain started: flow run %s (%s) of %s: %s", run.name, run.id, deployment, trig["reason"])
    return trig


@task(name="last-retrain", cache_policy=NO_CACHE, retries=0)
def last_retrain_task(settings: Settings) -> dict | None:
    """The last retrain the monitor started, looked up on the Prefect server: crashed (its process killed before
    it finished: the worker or the stack stopped, the machine out of memory), its cooldown is lifted, so that the
    evaluation that follows starts another if the breach is still there. Returns that trigger, or None."""
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound

    from cellcast.pipeline.monitoring import state as monitor

    run_id = monitor.unchecked_trigger(settings)
    if run_id is None:
        return None
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
    except (ObjectNotFound, ValueError):  # a run of another Prefect database (one made anew), or no run id
        return None
    if run.state is None or run.state.type != StateType.CRASHED:
        return None  # running, waiting, or ended by itself (a failed retrain keeps its cooldown: no storm)
    trig = monitor.record_trigger_crashed(settings, run_id, run.state.message or "crashed")
    get_run_logger().warning(
        "the retrain started at %s (flow run %s, %s) crashed: %s; no cooldown holds, the monitor starts another "
        "when a breach is still there",
        (trig or {}).get("at"),
        run.name,
        run_id,
        run.state.message,
    )
    return trig


def monitoring_steps(settings: Settings) -> MonitorReport:
    """Lift the cooldown of a crashed retrain, monitor, then trigger when due. Returns the monitor's report."""
    last_retrain_task(settings)
    report = monitor_task(settings)
    if report.verdict.retrain:
        trigger_task(settings, report)
    elif report.verdict.breaches:
        get_run_logger().info("thresholds crossed, no retrain: %s", report.verdict.reason)
    return report


@task(name="live-promotion", cache_policy=NO_CACHE, retries=0)
def live_promotion_task(settings: Settings) -> LivePromotion:
    """params.yaml monitor.live_promotion: the challenger against the champion on the live log (pipeline decides)."""
    from cellcast.pipeline.monitoring.promote import promote_live

    out = promote_live(settings)
    get_run_logger().info("%s", out.line)
    return out
