"""The training of one candidate as a Prefect task, in a module of its own: the training flow runs it in this process
or in a worker process (train.task_runner), and a worker imports only this (Prefect, torch, the training library),
not MLflow, GX or DVC."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ProcessPoolTaskRunner

from cellcast.pipeline.catalog import checkpoints_dir
from cellcast.pipeline.config import Settings
from cellcast.pipeline.errors import TrainingError
from cellcast.pipeline.modeling.train import Candidate, TrainResult, set_threads, train_candidate


def checkpoints(ws, settings: Settings) -> Path:
    return checkpoints_dir(settings, ws.meta.data_md5)


# set when the flow leaves (an error, a stop) while candidates train in its threads: a thread cannot be ended from
# outside, and the process would wait for each to train to the end before it exits
_leaving = threading.Event()


@contextmanager
def candidates_in_threads() -> Iterator[None]:
    """Around candidates trained in this process's threads: left by an error or a stop (SIGTERM, Ctrl-C), each ends
    after its epoch in progress, that epoch's checkpoint written."""
    _leaving.clear()
    try:
        yield
    except BaseException:
        _leaving.set()
        raise


def flow_leaving() -> bool:
    """Whether the candidates' block was left (train_task's code calls this rather than reading the Event: a task
    sent to Dask is pickled by value with the globals it reads, and an Event does not pickle)."""
    return _leaving.is_set()


@task(name="train-candidate", cache_policy=NO_CACHE, retries=0, task_run_name="train-{cand.name}")
def train_task(ws, cand: Candidate, settings: Settings, anchor, device: str | None) -> TrainResult:
    logger = get_run_logger()

    def on_epoch(row):
        if flow_leaving():
            # a CellcastError: one line in the run's log, no traceback (flows.UserErrorLog)
            raise TrainingError(f"{cand.name}: the training flow is leaving; ended after epoch {row['epoch']}")
        logger.info(
            "%s epoch %d: train %.4f  val %.4f  lr %.2g  (%.1fs)",
            cand.name,
            row["epoch"],
            row["train_loss"],
            row["val_loss"],
            row["lr"],
            row["seconds"],
        )

    ckpt = checkpoints(ws, settings)
    return train_candidate(
        ws,
        cand,
        settings,
        anchor.season,
        anchor=anchor,
        device=device,
        checkpoint_dir=ckpt,
        on_epoch=on_epoch,
        progress=sys.stderr.isatty(),
    )


@contextmanager
def worker_processes(n: int, threads: int | None) -> Iterator[ProcessPoolTaskRunner]:
    """A pool of `n` worker processes (spawned; `threads` torch threads each) to submit train_task to. They report
    to this process's Prefect API; on leaving, the pool is shut down in a background thread (its workers take
    seconds to exit) while the flow goes on. Left by an error or a stop (SIGTERM, Ctrl-C), the workers are ended
    at once: the pool's own shutdown waits for the candidates they are training, minutes, and a failed or stopped
    flow has no use for them (each keeps its last finished epoch in its checkpoint)."""
    with temporary_settings(updates=api_for_workers()):
        pool = ProcessPoolTaskRunner(max_workers=n, initializer=set_threads, initargs=(threads,))
        pool.__enter__()
        try:
            yield pool
        except BaseException:
            _end_workers(pool)
            pool.__exit__(None, None, None)
            raise
        threading.Thread(target=pool.__exit__, args=(None, None, None), name="close-training-workers").start()


def _end_workers(pool: ProcessPoolTaskRunner, grace_s: float = 5.0) -> None:
    """SIGTERM to the pool's worker processes, SIGKILL to those still there after `grace_s`."""
    import time

    # the executor's own table of its processes: ProcessPoolExecutor has no public way to end them before 3.14
    executor = getattr(pool, "_executor", None)
    workers = list((getattr(executor, "_processes", None) or {}).values())
    for p in workers:
        p.terminate()
    end = time.monotonic() + grace_s
    for p in workers:
        p.join(max(0.0, end - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def api_for_workers(start: bool = False) -> dict:
    """The Prefect API for worker processes: this process's temporary server when no PREFECT_API_URL is set (a
    worker left to itself would start a server of its own, and its task runs would not show in this flow run; a
    Dask worker ended with its cluster would leave that server running). start: start that server now if Prefect
    has not yet (the one its client would start: a local Dask cluster starts with the flow's task runner, before
    the flow run asks for it)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value():
        return {}
    server = SubprocessASGIServer()
    if start and not server.running and PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        server.start()
    return {PREFECT_API_URL: server.api_url} if server.running else {}
