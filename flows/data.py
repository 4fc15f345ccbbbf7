"""The data flow: ingest -> validate -> window, each a task calling one pipeline function."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cellcast.pipeline.catalog import validated_paths
from cellcast.pipeline.config import Settings, check_dataset_name, settings_for_run
from cellcast.pipeline.data import versioning
from cellcast.pipeline.data.findings import ValidationReport
from cellcast.pipeline.data.ingest import IngestResult, ingest_bundled, ingest_file, source_of
from cellcast.pipeline.data.validation import validate_dataset
from cellcast.pipeline.data.window import window_dataset
from cellcast.pipeline.data.windowset import WindowSet


# No retries: a file that fails to parse or validate fails the same way every time.
@task(name="ingest", cache_policy=NO_CACHE, retries=0)
def ingest_task(settings: Settings, source: dict | None = None) -> IngestResult:
    # no source given (a scheduled or triggered run): the file this dataset was ingested from, if any
    if source is None:  # a database query runs again for the rows after the last one it holds
        from cellcast.pipeline.data.database import ingest_query, query_source

        query = query_source(settings)
        if query:
            return ingest_query(settings=settings, refresh=True, **query)
    source = source or source_of(settings)
    if source:
        return ingest_file(settings=settings, **source)
    return ingest_bundled(settings)


@task(name="validate", cache_policy=NO_CACHE, retries=0)
def validate_task(settings: Settings) -> ValidationReport:
    return validate_dataset(settings)


@task(name="window", cache_policy=NO_CACHE, retries=0)
def window_task(settings: Settings) -> WindowSet:
    return window_dataset(settings)


# A push that fails under versioning.push: always fails the run; a retry would push the same bytes the same way.
@task(name="version-data", cache_policy=NO_CACHE, retries=0)
def version_task(settings: Settings, stages: list[str], data_md5: str | None = None) -> versioning.DataVersion | None:
    """dvc.lock records the stages this run made for the dataset (outside `dvc repro`); the validated data goes into
    the DVC cache under its md5 and to the remote (versioning.push): a re-ingest can replace data/NAME, never these
    bytes.
    data_md5: what the windows were cut from; a validated file that no longer matches is not claimed for them.
    Returns versioning.DataVersion, or None outside a DVC project."""
    name = settings.dataset
    logger = get_run_logger()
    try:
        versioning.commit(name, stages)
    except Exception as e:  # the run's data is on disk either way; `dvc commit` can record it later
        logger.warning("dvc.lock not updated for %s (%s)", name, " ".join(str(e).split())[:300])
    root = versioning.pipeline_root()
    entry = versioning.source_entry(name, root) if "ingest" in stages and root is not None else None
    if root is not None and entry and "bundled" not in (entry.get("ingest") or {}):  # the file it read (or a query's
        src = Path(entry["source"])  # snapshot: new rows)
        src = src if src.is_absolute() else root / src
        if src.is_file():
            versioning.keep(src, settings.versioning.push, settings.versioning.remote)
    pq, _ = validated_paths(settings)
    if not pq.is_file():
        return None
    kept = versioning.keep(pq, settings.versioning.push, settings.versioning.remote)
    if kept is None:
        return None
    if data_md5 and kept.md5 != data_md5:
        logger.warning(
            "%s: %s (md5 %s) is not the data the windows were cut from (%s): not recorded", name, pq, kept.md5, data_md5
        )
        return None
    logger.info(
        "data version %s of %s: in the DVC cache%s",
        kept.md5,
        name,
        f", pushed to remote '{kept.remote}'" if kept.remote else f" ({kept.note})",
    )
    return kept


def data_steps(settings: Settings, source: dict | None = None) -> WindowSet:
    """The three tasks in order; returns the WindowSet. Called inside data_flow and training_flow."""
    ingest_task(settings, source)
    validate_task(settings)
    return window_task(settings)


@flow(name="cellcast-data", log_prints=True)
def data_flow(name: str, settings: Settings, source: dict | None = None) -> WindowSet:
    """ingest -> validate -> window. `source` holds ingest_file's options for a user file; none: bundled."""
    check_dataset_name(name)
    settings = settings_for_run(name, settings)  # made for `name`: refused (one line) when made for another dataset
    ws = data_steps(settings, source)
    version_task(settings, ["ingest", "validate", "window"], ws.meta.data_md5)
    print(
        f"{name}: {ws.meta.rows} rows, windows {ws.meta.counts}, lookback {ws.meta.lookback}, horizon {ws.meta.horizon}"
    )
    return ws
