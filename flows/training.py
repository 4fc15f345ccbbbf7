"""The training flow: data -> baselines -> anchor -> candidates (in parallel) [-> their ensemble] -> assess -> track
-> register -> promote."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext, get_run_context
from prefect.task_runners import ThreadPoolTaskRunner

from cellcast.flows.backtest import backtest_steps
from cellcast.flows.candidates import (
    api_for_workers,
    candidates_in_threads,
    checkpoints,
    train_task,
    worker_processes,
)
from cellcast.flows.data import data_steps, version_task
from cellcast.pipeline.catalog import models_dir, training_lock, validation_report_path
from cellcast.pipeline.config import Settings, check_dataset_name, find_params, settings_for_run
from cellcast.pipeline.data.window import load_windows
from cellcast.pipeline.errors import TrackingUnavailableError
from cellcast.pipeline.files import exclusive, owner, owner_gone
from cellcast.pipeline.modeling.anchor import AnchorChoice, choose_anchor
from cellcast.pipeline.modeling.train import (
    TrainResult,
    anchor_alone,
    build_ensemble,
    candidates,
    cpu_threads,
    pick_device,
    torch_threads,
    use_decoder,
)
from cellcast.pipeline.registry import assessment, promotion_run, run_logs, summary, tracking
from cellcast.pipeline.registry.references import reference_rows


@task(name="baselines", cache_policy=NO_CACHE)
def baselines_task(ws, settings: Settings) -> assessment.Baselines:
    return assessment.baselines(ws, settings)


@task(name="references", cache_policy=NO_CACHE)
def references_task(ws, settings: Settings) -> dict:
    """MSTL / ETS / Theta on the promotion's test origins: reference rows, never a reason to fail the run."""
    return reference_rows(ws, settings)


@task(name="series-references", cache_policy=NO_CACHE, task_run_name="references-{part[0].series_id}+{n}")
def series_references_task(fn, part: list, n: int) -> list:
    """A part of a panel's series: their references (modeling/panel_references.py), one series after another."""
    return fn(part)


def reference_steps(ws, settings: Settings) -> dict:
    """The references: one task for a single series; a panel's series in parts, one task each, fanned out on the
    flow's task runner (threads here, a Dask cluster with train.task_runner: dask)."""
    if not ws.is_panel:
        return references_task(ws, settings)
    t = settings.train
    parts = t.parallel_count() * (4 if t.task_runner == "dask" else 1)

    def mapper(fn, chunks: list) -> list:
        futures = series_references_task.map(unmapped(fn), chunks, [len(c) - 1 for c in chunks])
        return [f.result() for f in futures]

    return reference_rows(ws, settings, mapper=mapper, parts=parts)


@task(name="anchor", cache_policy=NO_CACHE)
def anchor_task(ws, settings: Settings, season: int | None) -> AnchorChoice:
    """What every candidate learns its residual over (train.anchor): fitted once, shared by all of them."""
    return choose_anchor(ws, settings, season)


@task(name="ensemble", cache_policy=NO_CACHE)
def ensemble_task(results, ws, settings: Settings) -> TrainResult | None:
    return build_ensemble(results, ws, settings)


@task(name="assess", cache_policy=NO_CACHE, task_run_name="assess-{result.candidate.name}")
def assess_task(result, ws, settings: Settings, out_dir: str) -> assessment.CandidateReport:
    return assessment.assess(result, ws, settings, Path(out_dir))


def candidates_at_once(ws, settings: Settings, device: str, n: int) -> int:
    """How many of the `n` candidates train at once: train.parallel, at most one per candidate; with the processes
    runner a panel's (its window set is not copied into worker processes) and a GPU's train one after another."""
    t = settings.train
    if t.task_runner == "dask":
        return t.parallel_count()
    if t.task_runner == "processes" and (ws.is_panel or device != "cpu"):
        return 1
    return min(t.parallel_count(), n)


# A tracking server that is down fails here, in seconds, before any training; runs of this dataset that a
# killed process left RUNNING are ended KILLED here too, with the reason.
@task(name="check-tracking", cache_policy=NO_CACHE, retries=0)
def tracking_task(settings: Settings) -> str:
    name = settings.dataset
    tracking.configure(registry=settings.registry)
    try:
        uri = tracking.check_reachable()
        tracking.end_orphans(name)
        return uri
    except TrackingUnavailableError as e:
        raise e.kept(f"nothing was trained or registered; rerun `cellcast train {name}` once it answers") from None


# Reaching MLflow is the one step where a retry can help (a tracking server restarting); MLflow retries each
# request (registry.retry_seconds), so the task itself is not re-run (no duplicate runs).
@task(name="track-and-promote", cache_policy=NO_CACHE, retries=0)
def promote_task(
    ws, settings: Settings, base, results, reports, selection=None, references=None, data_version=None
) -> promotion_run.Outcome:
    ctx = get_run_context()
    flow_run_id = str(ctx.task_run.flow_run_id) if isinstance(ctx, TaskRunContext) else None
    validation = validation_report_path(settings)
    try:
        outcome = promotion_run.track_and_promote(
            ws,
            settings,
            base,
            results,
            reports,
            validation,
            flow_run_id,
            selection=selection,
            references=references,
            data_version=data_version,
        )
    except TrackingUnavailableError as e:
        # the registry is untouched or left as the last finished call left it; the weights are on disk
        raise e.kept(
            f"the trained candidates are kept ({checkpoints(ws, settings)}): rerun `cellcast train "
            f"{ws.meta.name}` once it answers; it resumes from them and registers"
        ) from None
    summary.write_summary(outcome, settings)
    return outcome


@flow(name="cellcast-train", log_prints=True)
def training_flow(
    name: str,
    settings: Settings | None = None,
    source: dict | None = None,
    from_windows: bool = False,
    device: str | None = None,
    reason: str | None = None,
    overrides: dict | None = None,
) -> promotion_run.Outcome:
    """Train every candidate of params.yaml on dataset `name` and let the registry decide.
    settings: given by a caller in this process (the CLI); a deployment gives none, and params.yaml is read when
    the run starts. overrides: params sections on top, e.g. {"train": {"epochs": 3}}.
    reason: why this run was started (the monitor's verdict when it triggered a retrain)."""
    check_dataset_name(name)
    logger = get_run_logger()
    if settings is None:
        logger.info("settings: %s for %s%s", find_params(), name, f", overrides {overrides}" if overrides else "")
    settings = settings_for_run(name, settings, overrides)
    if reason:
        logger.info("retrain of %s: %s", name, reason)
    _end_orphan_flow_runs(name, logger)
    # one training of a dataset at a time: two would train the same candidates into the same checkpoints and
    # race for the champion alias; the second waits (a killed holder releases the lock)
    lock = training_lock(settings)
    with exclusive(
        lock,
        waiting=lambda who: logger.warning("%s is being trained by %s: waiting for it to finish (%s)", name, who, lock),
    ):
        return _train(settings, source, from_windows, device, logger)


def _train(settings: Settings, source, from_windows: bool, device: str | None, logger) -> promotion_run.Outcome:
    tracking_task(settings)
    ws = load_windows(settings) if from_windows else data_steps(settings, source)
    # the bytes this model trains on: in the DVC cache (and remote) before any version names them
    kept = version_task(settings, [] if from_windows else ["ingest", "validate", "window"], ws.meta.data_md5)
    base = baselines_task(ws, settings)
    logger.info(
        "baselines (test MASE): %s; best seasonal naive on validation: season %s",
        {k: round(v["mase"], 3) for k, v in base.test.scores.items()},
        base.anchor_season,
    )
    anchor = anchor_task(ws, settings, base.anchor_season)
    logger.info(
        "anchor: %s (%s)%s",
        anchor.kind,
        anchor.reason,
        f"; validation MASE { ({k: round(v, 3) for k, v in anchor.val_mase.items()}) }" if anchor.val_mase else "",
    )
    dev = str(pick_device(device or settings.train.device))
    results = _train_candidates(ws, settings, anchor, dev, logger)
    selection = _backtest_selection(ws, settings, results, dev, logger)
    refs = reference_steps(ws, settings)
    if refs:
        logger.info(
            "references (test MASE on the promotion origins%s): %s",
            "" if not ws.is_panel else f", {next(iter(refs.values()))['series_sampled']} series",
            {k: round(v["mase"], 3) if "mase" in v else v["status"] for k, v in refs.items()},
        )
    reports = _assess(results, ws, settings)
    outcome = promote_task(ws, settings, base, results, reports, selection, refs, kept)
    print(summary.summary_table(outcome))
    publish_result(outcome)
    if settings.train.strategy == "local" and ws.is_panel:
        local_task(ws, settings, base.anchor_season)
    return outcome


def _train_candidates(ws, settings: Settings, anchor: AnchorChoice, dev: str, logger) -> list[TrainResult]:
    """Every candidate of params.yaml trained (in worker processes, threads or one after another, as
    train.task_runner and the cores allow), then their ensemble and the anchor alone when they apply."""
    cands = candidates(settings)
    m, t = ws.meta, settings.train
    at_once = candidates_at_once(ws, settings, dev, len(cands))
    logger.info(  # what the defaults chose for this series (docs/forecasting.md "Defaults")
        "recipe: lookback %d, horizon %d, calendar %s, known ahead %s, decoder %s, ensemble %s; "
        "%d candidate(s), %d at once",
        m.lookback,
        m.horizon,
        (m.calendar or {}).get("parts") or "none",
        [n for n, k in zip(m.future_names, m.future_kinds, strict=True) if k == "user"] or "none",
        "on" if use_decoder(t.decoder, m) else "off",
        "on" if t.ensemble and len(cands) > 1 else "off",
        len(cands),
        at_once,
    )
    # candidates trained at once share the cores (train.threads each); the count is put back afterwards
    threads = cpu_threads(settings, dev, at_once)
    started = time.perf_counter()
    with torch_threads(threads):
        if t.task_runner == "processes" and at_once > 1:
            # one worker process per candidate trained at once: no interpreter shared between them
            with worker_processes(at_once, threads) as pool:
                running = [
                    pool.submit(train_task, dict(ws=ws, cand=c, settings=settings, anchor=anchor, device=dev))
                    for c in cands
                ]
                results = [f.result() for f in running]
        elif t.task_runner == "dask" or at_once > 1:
            with candidates_in_threads():  # (on Dask they train in other processes, which the cluster ends)
                futures = [train_task.submit(ws, c, settings, anchor, dev) for c in cands]
                results = [f.result() for f in futures]
        else:
            results = [train_task(ws, c, settings, anchor, dev) for c in cands]
        logger.info("%d candidate(s) trained in %.1fs, %d at once", len(cands), time.perf_counter() - started, at_once)
        ensemble = ensemble_task(results, ws, settings)
        alone = anchor_alone(results, ws, settings, anchor)
    # after the trained ones: a tie on validation (cells that stayed at their anchor) keeps a trained candidate
    return [*results, *(r for r in (ensemble, alone) if r is not None)]


def _backtest_selection(ws, settings: Settings, results: list[TrainResult], dev: str, logger) -> dict | None:
    """evaluate.selection: backtest: each candidate's mean MASE over rolling-origin folds, which selection reads
    instead of the validation split; None otherwise."""
    if settings.evaluate.selection != "backtest":
        return None
    # folds cut from the rows before the test split: the final test rows decide promotion, never selection
    bt = backtest_steps(ws, settings, end=ws.meta.bounds["test"], device=dev)
    selection = {
        "folds": len(bt.folds),
        "refit": bt.refit,
        "rows": [0, bt.end],
        "mean_mase": bt.mean_mase([r.candidate.name for r in results]),
    }
    logger.info(
        "backtest selection over %d folds (rows 0..%d): mean MASE %s",
        len(bt.folds),
        bt.end - 1,
        {k: round(v, 3) for k, v in selection["mean_mase"].items()},
    )
    return selection


def _assess(results: list[TrainResult], ws, settings: Settings) -> list[assessment.CandidateReport]:
    """Each result exported to ONNX in models_dir, gated on parity and scored."""
    out_dir = str(models_dir(settings))
    if settings.train.task_runner != "dask" and (os.cpu_count() or 1) > 1:
        # in the flow's threads: ONNX Runtime and torch release the interpreter while they compute
        assessing = [assess_task.submit(r, ws, settings, out_dir) for r in results]
        return [f.result() for f in assessing]
    return [assess_task(r, ws, settings, out_dir) for r in results]


@task(name="local-models", cache_policy=NO_CACHE, retries=0)
def local_task(ws, settings: Settings, season: int | None) -> dict:
    """train.strategy: local: one model per series and candidate, for comparison (modeling/local.py), fanned out over
    Dask with train.task_runner: dask (a scheduler at train.dask_address, else a local cluster); a comparison run."""
    from cellcast.pipeline.modeling.local import local_comparison
    from cellcast.pipeline.modeling.panel_eval import describe

    logger = get_run_logger()
    t = settings.train
    if t.task_runner == "dask":
        from distributed import Client, LocalCluster

        from cellcast.pipeline.data.panel_validation import client_mapper

        cluster = (
            None
            if t.dask_address
            else LocalCluster(n_workers=t.parallel_count(), threads_per_worker=1, dashboard_address=None)
        )
        with Client(t.dask_address or cluster) as client:
            comparison = local_comparison(ws, settings, season, mapper=client_mapper(client))
        if cluster is not None:
            cluster.close()
    else:
        comparison = local_comparison(ws, settings, season)
    run_id = run_logs.log_local_comparison(ws, settings, comparison)
    for cand, c in comparison.items():
        logger.info(
            "local models, %s (%d series models, %.0fs): %s%s",
            cand,
            c["models"],
            c["seconds"],
            describe(c["aggregate"]),
            f"; {len(c['failed'])} could not train" if c["failed"] else "",
        )
    logger.info("comparison run local-%s: %s (not registered)", ws.meta.name, run_id)
    return comparison


def publish_result(outcome) -> None:
    """The run's result on the flow run's Artifacts tab: the candidates against the baselines, the decision and
    its reason, links to the MLflow runs and the registered version. A person who opens the flow run in the
    Prefect UI sees what it decided without a terminal."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    from cellcast.pipeline.registry.results import artifact_rows

    key = re.sub(r"[^a-z0-9-]+", "-", outcome.dataset.lower()).strip("-") or "dataset"
    rows = artifact_rows(outcome.rows())
    create_table_artifact(
        rows,
        key=f"{key}-candidates",
        description=f"{outcome.dataset}: the candidates against the baselines (MASE: lower is better)",
    )
    d = outcome.decision
    before = (outcome.champion_before or {}).get("version")
    registered = f"{outcome.model_name} v{outcome.version}" if outcome.version else "nothing registered"
    create_markdown_artifact(
        f"## {'Promoted to champion' if d.get('promote') else 'Not promoted'}: {registered}\n\n"
        f"{d.get('reason')}\n\n"
        f"| | |\n|---|---|\n| best candidate | {outcome.best or '-'} |\n| registered | {registered} |\n"
        f"| champion before | {'v' + str(before) if before else 'none'} |\n"
        f"| champion now | {'v' + str(outcome.champion_after) if outcome.champion_after else 'none'} |\n"
        f"| tracking | {outcome.tracking_uri} |\n",
        key=f"{key}-decision",
        description=f"{outcome.dataset}: the promotion decision and its reason",
    )
    runs = {
        "training run (parent)": outcome.parent_run_id,
        **{f"candidate {c['name']}": c.get("run_id") for c in outcome.candidates},
    }
    for label, url in tracking.ui_links(outcome.dataset, runs, outcome.model_name, outcome.version).items():
        create_link_artifact(
            url,
            link_text=label,
            key=f"{key}-{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')}",
            description=f"MLflow: {label}",
        )


def _end_orphan_flow_runs(name: str, logger) -> list[str]:
    """Tag this flow run with its owner (host, pid, process start) and mark Crashed the runs of this flow on
    dataset `name` that Prefect still shows Running but whose process on this host is gone (kill -9): the
    Prefect side of what tracking.end_orphans does for MLflow runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    ctx = get_run_context()
    if not isinstance(ctx, FlowRunContext) or ctx.flow_run is None or ctx.flow is None:
        return []
    me = ctx.flow_run
    ended = []
    with get_client(sync_client=True) as client:
        mine = [f"cellcast.{k}={v}" for k, v in owner().items()]
        client.update_flow_run(me.id, tags=[*[t for t in me.tags if not t.startswith("cellcast.")], *mine])
        running = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[ctx.flow.name])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
        )
        for run in running:
            if run.id == me.id or (run.parameters or {}).get("name") != name:
                continue
            recorded = dict(
                t[len("cellcast.") :].split("=", 1) for t in run.tags if t.startswith("cellcast.") and "=" in t
            )
            if not owner_gone(recorded):
                continue
            why = (
                f"process {recorded['pid']} on {recorded['host']} ended without finishing this run (killed?); "
                f"found by flow run {me.name}"
            )
            client.set_flow_run_state(run.id, Crashed(message=why), force=True)
            logger.warning("flow run %s was left Running by a process that is gone: marked Crashed", run.name)
            ended.append(str(run.id))
    return ended


def task_runner(settings: Settings):
    """Threads in this process (train.parallel wide, a thread per core at least), or a Dask cluster:
    `train.dask_address`, else a local cluster of train.parallel worker processes, one thread each (each candidate
    gets its own core)."""
    t = settings.train
    if t.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if t.dask_address:
            return DaskTaskRunner(address=t.dask_address)
        # torch's pool per worker: train.threads, or the cores shared out
        per = str(t.threads if t.threads != "auto" else max(1, (os.cpu_count() or 1) // t.parallel_count()))
        # the workers report to this process's Prefect API: with none named, the temporary server, started now
        api = {str(k.name): str(v) for k, v in api_for_workers(start=True).items()}
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": t.parallel_count(),
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
                "env": {"OMP_NUM_THREADS": per, "MKL_NUM_THREADS": per, **api},
            }
        )
    # a thread per core at least: the candidates are assessed (export, parity, scores) in them
    return ThreadPoolTaskRunner(max_workers=max(t.parallel_count(), os.cpu_count() or 1))


def run_training(settings: Settings, **kw) -> promotion_run.Outcome:
    """Run the flow with the task runner params.yaml asks for."""
    return training_flow.with_options(task_runner=task_runner(settings))(settings.dataset, settings, **kw)
